package upload

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/bucket/store"
	"github.com/ossmount/ossmount/cache"
	"github.com/ossmount/ossmount/integration/osslocal"
	"github.com/ossmount/ossmount/internal/crc64"
)

// claims is a body that says which of its ranges the object "src" holds
// (cache.Staging's Unchanged), rightly or not.
type claims struct {
	*bytes.Reader
	etag string
}

func (c claims) Unchanged(off, end int64) (string, string, bool) { return "src", c.etag, true }

func objectOf(t *testing.T, b bucket.Bucket, key string) []byte {
	t.Helper()
	body, err := b.Get(context.Background(), bucket.GetRequest{Key: key, Length: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	data, _ := io.ReadAll(body)
	return data
}

// A body that claims ranges the object does not hold (a mistake in what a
// staging file remembers) costs a fallback, never a wrong object: the
// copied parts' sums differ from the body's, and the whole body is sent.
// A body whose claims hold is copied.
func TestCopyingUploadFallsBackOnWrongClaims(t *testing.T) {
	ctx := context.Background()
	b := bucket.NewFake("test-bucket")
	u := New(b, Config{PartSize: 100 << 10}, slog.New(slog.DiscardHandler))
	src := make([]byte, 450<<10)
	rand.NewChaCha8([32]byte{1}).Read(src)
	res, err := b.Put(ctx, bucket.PutRequest{Key: "src", Body: bytes.NewReader(src), Size: int64(len(src))})
	if err != nil {
		t.Fatal(err)
	}

	right := claims{bytes.NewReader(src), res.ETag}
	if err := u.Put(ctx, "copy", right, int64(len(src)), Metadata{}); err != nil {
		t.Fatal(err)
	}
	if got := objectOf(t, b, "copy"); !bytes.Equal(got, src) {
		t.Fatal("a copied object differs")
	}
	// Five parts of 100 KiB, copied as one (copyPartSize).
	if n := b.Calls("UploadPartCopy"); n != 1 {
		t.Fatalf("%d parts copied, want 1", n)
	}

	edited := append([]byte(nil), src...)
	copy(edited[150<<10:], "not in the object")
	wrong := claims{bytes.NewReader(edited), res.ETag}
	if err := u.Put(ctx, "edited", wrong, int64(len(edited)), Metadata{}); err != nil {
		t.Fatal(err)
	}
	if got := objectOf(t, b, "edited"); !bytes.Equal(got, edited) {
		t.Fatal("an upload of wrong claims stored other bytes than the body's")
	}
	if n := b.Calls("PutObject"); n != 2 { // src's, and the fallback's
		t.Fatalf("%d PutObject calls, want the fallback's", n-1)
	}
	if n, m := b.Calls("AbortMultipartUpload"), b.Calls("CompleteMultipartUpload"); n != 1 || m != 1 {
		t.Fatalf("%d aborts and %d completions, want 1 and 1", n, m)
	}
}

// A server that returns no sum for copied parts: the completed object's
// sum finds the wrong claim, and the whole body is sent at once.
func TestCopyingUploadWithoutPartSumsChecksTheWhole(t *testing.T) {
	ctx := context.Background()
	st, local, b := withoutCopySumsServer(t)
	u := New(b, Config{PartSize: 100 << 10}, slog.New(slog.DiscardHandler))
	src := make([]byte, 450<<10)
	rand.NewChaCha8([32]byte{2}).Read(src)
	res, err := b.Put(ctx, bucket.PutRequest{Key: "src", Body: bytes.NewReader(src), Size: int64(len(src))})
	if err != nil {
		t.Fatal(err)
	}
	edited := append([]byte(nil), src...)
	copy(edited[150<<10:], "not in the object")
	if err := u.Put(ctx, "edited", claims{bytes.NewReader(edited), res.ETag}, int64(len(edited)), Metadata{}); err != nil {
		t.Fatal(err)
	}
	_, r, err := st.Open("test-bucket", "edited", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, _ := io.ReadAll(r); !bytes.Equal(got, edited) {
		t.Fatal("the object holds other bytes than the body's")
	}
	if keys, _ := st.Uploads("test-bucket"); len(keys) != 0 {
		t.Fatalf("uploads left open: %v", keys)
	}
	// The copies went through unchecked, the completion found the wrong
	// sum, and the whole body went after it.
	if c, p := local.Count("CompleteMultipartUpload"), local.Count("PutObject"); c != 1 || p != 2 {
		t.Fatalf("%d completions and %d PUTs, want 1 and 2 (src's, the fallback's)", c, p)
	}
}

// withoutCopySumsServer is a local server over a store with the bucket
// "test-bucket" that returns no CRC-64 for copied parts, and a bucket of it.
func withoutCopySumsServer(t *testing.T) (*store.Store, *osslocal.Server, bucket.Bucket) {
	st := store.NewMemory()
	if err := st.CreateBucket("test-bucket"); err != nil {
		t.Fatal(err)
	}
	local := osslocal.New(osslocal.Config{Store: st, Keys: map[string]string{"id": "secret"}})
	srv := httptest.NewServer(withoutCopySums(local))
	t.Cleanup(srv.Close)
	b := bucket.NewOSS(bucket.Config{Bucket: "test-bucket", Endpoint: srv.URL, Region: "local", PathStyle: true,
		Credentials: &bucket.Credentials{AccessKeyID: "id", AccessKeySecret: "secret"}})
	return st, local, b
}

// withoutCopySums drops the CRC-64 of UploadPartCopy responses.
func withoutCopySums(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && r.Header.Get("x-oss-copy-source") != "" && r.URL.Query().Has("uploadId") {
			w = &sumDropper{ResponseWriter: w}
		}
		h.ServeHTTP(w, r)
	})
}

type sumDropper struct{ http.ResponseWriter }

func (d *sumDropper) WriteHeader(status int) {
	d.Header().Del("x-oss-hash-crc64ecma")
	d.ResponseWriter.WriteHeader(status)
}

// startless is a body staged from the end (cache/absent.go): its bytes
// below end read as zeros, and are the object "src"'s in version etag,
// whose sum over them is crc (rightly or not).
type startless struct {
	*bytes.Reader
	etag string
	end  int64
	crc  uint64
}

func (s startless) Unchanged(off, end int64) (string, string, bool) { return "", "", false }
func (s startless) Absent() (string, string, int64, uint64)         { return "src", s.etag, s.end, s.crc }

// A file staged from the end has its start copied in parts that end where
// its staged bytes begin, checked against the start's sum. A wrong sum or
// a replaced object is no object made of the wrong bytes: the caller is
// told to fetch the start (cache.ErrAbsent), on every server.
func TestCopyingUploadOfAnAbsentStart(t *testing.T) {
	ctx := context.Background()
	st, _, noSums := withoutCopySumsServer(t)
	buckets := map[string]bucket.Bucket{"fake": bucket.NewFake("test-bucket"), "no copy sums": noSums}
	for name, b := range buckets {
		t.Run(name, func(t *testing.T) {
			u := New(b, Config{PartSize: 100 << 10}, slog.New(slog.DiscardHandler))
			src := make([]byte, 350<<10)
			rand.NewChaCha8([32]byte{3}).Read(src)
			res, err := b.Put(ctx, bucket.PutRequest{Key: "src", Body: bytes.NewReader(src), Size: int64(len(src))})
			if err != nil {
				t.Fatal(err)
			}
			const end = 300 << 10
			file := append(make([]byte, end), src[end:]...)
			file = append(file, "appended"...)
			want := append(append([]byte(nil), src...), "appended"...)
			body := startless{bytes.NewReader(file), res.ETag, end, crc64.Checksum(src[:end])}

			if err := u.Put(ctx, "log", body, int64(len(file)), Metadata{}); err != nil {
				t.Fatal(err)
			}
			if got := objectOf(t, b, "log"); !bytes.Equal(got, want) {
				t.Fatal("the object is not the start copied and the rest sent")
			}

			wrongSum := body
			wrongSum.crc ^= 1
			if err := u.Put(ctx, "wrong", wrongSum, int64(len(file)), Metadata{}); !errors.Is(err, cache.ErrAbsent) {
				t.Fatalf("an upload whose start's sum is wrong: %v, want cache.ErrAbsent", err)
			}
			replaced := body
			replaced.etag = `"another version"`
			if err := u.Put(ctx, "replaced", replaced, int64(len(file)), Metadata{}); !errors.Is(err, cache.ErrAbsent) {
				t.Fatalf("an upload from a replaced object: %v, want cache.ErrAbsent", err)
			}
			if _, err := b.Head(ctx, "replaced"); !errors.Is(err, bucket.ErrNotFound) {
				t.Fatalf("an upload from a replaced object made one: %v", err)
			}
		})
	}
	if keys, _ := st.Uploads("test-bucket"); len(keys) != 0 {
		t.Fatalf("uploads left open: %v", keys)
	}
}

// A run of unchanged parts is copied in parts of up to copyPartSize: an
// append to an object of 659 parts of 100 KiB copies the first 655 in one
// request, the next three in another, and sends the last.
func TestCopyingUploadJoinsCopiedParts(t *testing.T) {
	ctx := context.Background()
	b := bucket.NewFake("test-bucket")
	u := New(b, Config{PartSize: 100 << 10}, slog.New(slog.DiscardHandler))
	src := make([]byte, 64<<20+300<<10)
	rand.NewChaCha8([32]byte{4}).Read(src)
	res, err := b.Put(ctx, bucket.PutRequest{Key: "src", Body: bytes.NewReader(src), Size: int64(len(src))})
	if err != nil {
		t.Fatal(err)
	}
	appended := append(src, "appended"...)
	last := int64(len(src)) / (100 << 10) * (100 << 10)
	body := lastChanged{claims{bytes.NewReader(appended), res.ETag}, last}
	if err := u.Put(ctx, "log", body, int64(len(appended)), Metadata{}); err != nil {
		t.Fatal(err)
	}
	if got := objectOf(t, b, "log"); !bytes.Equal(got, appended) {
		t.Fatal("the object differs")
	}
	if c, p := b.Calls("UploadPartCopy"), b.Calls("UploadPart"); c != 2 || p != 1 {
		t.Fatalf("%d copy requests and %d parts sent, want 2 and 1", c, p)
	}
}

// lastChanged claims every range below from.
type lastChanged struct {
	claims
	from int64
}

func (l lastChanged) Unchanged(off, end int64) (string, string, bool) {
	return "src", l.etag, end <= l.from
}
