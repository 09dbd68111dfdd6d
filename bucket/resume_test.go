package bucket

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// breaking is a Bucket whose GET bodies break (io.ErrUnexpectedEOF) after
// the number of bytes the next entry of cuts says; -1 lets a body whole.
type breaking struct {
	*Fake
	cuts []int
}

func (b *breaking) Get(ctx context.Context, req GetRequest) (Body, error) {
	r, err := b.Fake.Get(ctx, req)
	if err != nil || len(b.cuts) == 0 {
		return r, err
	}
	cut := b.cuts[0]
	b.cuts = b.cuts[1:]
	if cut < 0 {
		return r, nil
	}
	return Body{ReadCloser: cutBody{io.MultiReader(io.LimitReader(r, int64(cut)), errReader{io.ErrUnexpectedEOF}), r}, ETag: r.ETag}, nil
}

type cutBody struct {
	io.Reader
	io.Closer
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestGetResuming(t *testing.T) {
	data := []byte(strings.Repeat("0123456789", 100))
	cases := []struct {
		name      string
		off, len  int64
		cuts      []int
		retries   int
		want      []byte
		wantErr   bool
		wantBroke int
	}{
		{"whole", 0, 1000, nil, 3, data, false, 0},
		{"broken twice, once before a byte", 100, 800, []int{300, 0}, 3, data[100:900], false, 2},
		{"broken at its last byte", 0, 1000, []int{1000}, 3, data, false, 0},
		{"retries spent", 0, 1000, []int{10, 10, 10, 10}, 3, data[:40], true, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := NewFake("b")
			if _, err := f.Put(context.Background(), PutRequest{Key: "k", Body: bytes.NewReader(data), Size: int64(len(data))}); err != nil {
				t.Fatal(err)
			}
			b := &breaking{Fake: f, cuts: c.cuts}
			var broke []int64
			r, err := GetResuming(context.Background(), b, GetRequest{Key: "k", Off: c.off, Length: c.len}, c.retries, func(off int64, err error) {
				broke = append(broke, off)
			})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := io.ReadAll(r)
			if (err != nil) != c.wantErr || (err != nil && !errors.Is(err, io.ErrUnexpectedEOF)) {
				t.Fatalf("err %v, want an error: %v", err, c.wantErr)
			}
			if !bytes.Equal(got, c.want) {
				t.Fatalf("read %q, want %q", got, c.want)
			}
			if len(broke) != c.wantBroke {
				t.Fatalf("broke at %v, want %d times", broke, c.wantBroke)
			}
		})
	}
}

// A body that ends where the server said, before the range asked for (the
// object is shorter now), ends the reader without retries.
func TestGetResumingShorterObject(t *testing.T) {
	f := NewFake("b")
	if _, err := f.Put(context.Background(), PutRequest{Key: "k", Body: strings.NewReader("short"), Size: 5}); err != nil {
		t.Fatal(err)
	}
	r, err := GetResuming(context.Background(), f, GetRequest{Key: "k", Length: 100}, 3, func(int64, error) { t.Error("retried") })
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(r); err != nil || string(got) != "short" {
		t.Fatalf("%q %v", got, err)
	}
}

// The rest of a broken body comes from the version its first bytes came
// from: replaced meanwhile, the read fails (ErrChanged) rather than splice
// two versions.
func TestGetResumingReplacedObject(t *testing.T) {
	f := NewFake("b")
	put := func(data string) {
		if _, err := f.Put(context.Background(), PutRequest{Key: "k", Body: strings.NewReader(data), Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
	}
	put("old version")
	b := &breaking{Fake: f, cuts: []int{4}}
	r, err := GetResuming(context.Background(), b, GetRequest{Key: "k", Length: 11}, 3, func(int64, error) { put("NEW VERSION") })
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if !errors.Is(err, ErrChanged) || string(got) != "old " {
		t.Fatalf("read %q, %v; want \"old \" and ErrChanged", got, err)
	}
}

// Pinned from the start (IfMatch), a read of a version replaced already
// fails at once.
func TestGetResumingPinned(t *testing.T) {
	f := NewFake("b")
	first, err := f.Put(context.Background(), PutRequest{Key: "k", Body: strings.NewReader("one"), Size: 3})
	if err != nil {
		t.Fatal(err)
	}
	r, err := GetResuming(context.Background(), f, GetRequest{Key: "k", Length: 3, IfMatch: first.ETag}, 3, func(int64, error) {})
	if err != nil || r.ETag != first.ETag {
		t.Fatalf("get of the version there: %v, ETag %q, want %q", err, r.ETag, first.ETag)
	}
	r.Close()
	if _, err := f.Put(context.Background(), PutRequest{Key: "k", Body: strings.NewReader("two"), Size: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := GetResuming(context.Background(), f, GetRequest{Key: "k", Length: 3, IfMatch: first.ETag}, 3, func(int64, error) {}); !errors.Is(err, ErrChanged) {
		t.Fatalf("get of a replaced version: %v, want ErrChanged", err)
	}
}
