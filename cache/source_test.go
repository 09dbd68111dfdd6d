package cache

import (
	"bytes"
	mrand "math/rand/v2"
	"testing"
)

// After SetSource, a range Unchanged reports holds the source's bytes,
// whatever writes, truncates and copies came since: a model test. And
// ranges no change touched are reported, so that uploads can copy them.
func TestUnchangedRangesHoldTheSourceBytes(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(3, 4))
	for round := range 30 {
		d, _ := OpenDir(t.TempDir(), 0)
		s, _ := d.NewStaging()
		orig := make([]byte, 2000+rng.IntN(3000))
		for i := range orig {
			orig[i] = byte(1 + rng.IntN(255))
		}
		if _, err := s.WriteAt(orig, 0); err != nil {
			t.Fatal(err)
		}
		s.SetSource("k", "e1")
		if key, etag, ok := s.Unchanged(0, int64(len(orig))); !ok || key != "k" || etag != "e1" {
			t.Fatalf("a fresh source: %q %q %v", key, etag, ok)
		}
		content := append([]byte(nil), orig...)
		touched := make([]bool, len(orig)) // by any change, in the model
		for range 1 + round {
			off, n := rng.Int64N(int64(len(orig))+500), rng.Int64N(200)
			switch rng.IntN(4) {
			case 0, 1:
				data := bytes.Repeat([]byte{byte(rng.IntN(256))}, int(n))
				if _, err := s.WriteAt(data, off); err != nil {
					t.Fatal(err)
				}
				for int64(len(content)) < off+n {
					content = append(content, 0)
				}
				copy(content[off:], data)
				for i := off; i < min(off+n, int64(len(touched))); i++ {
					touched[i] = true
				}
			case 2:
				if err := s.Truncate(off); err != nil {
					t.Fatal(err)
				}
				for int64(len(content)) < off {
					content = append(content, 0)
				}
				content = content[:off]
				for i := off; i < int64(len(touched)); i++ {
					touched[i] = true
				}
			case 3:
				c, err := s.CopyTo(d)
				if err != nil {
					t.Fatal(err)
				}
				s.Remove()
				s = c
			}
		}
		for off := int64(0); off < int64(len(orig)); off += 100 {
			end := min(off+100, int64(len(orig)))
			_, _, ok := s.Unchanged(off, end)
			untouched := true
			for i := off; i < end; i++ {
				untouched = untouched && !touched[i]
			}
			if ok != untouched {
				t.Fatalf("round %d: [%d, %d) unchanged: %v, the model says %v", round, off, end, ok, untouched)
			}
			if ok {
				got := make([]byte, end-off)
				if _, err := s.ReadAt(got, off); err != nil || !bytes.Equal(got, orig[off:end]) {
					t.Fatalf("round %d: [%d, %d) reported unchanged holds other bytes (%v)", round, off, end, err)
				}
			}
		}
		s.Remove()
		if _, _, ok := s.Unchanged(0, 1); ok {
			t.Fatal("a removed file has a source")
		}
	}
}

// A copy of a staging file whose upload then completes takes that object
// as its source for what it left unchanged since the copy.
func TestCopyFollowsItsOriginalIntoTheBucket(t *testing.T) {
	d, err := OpenDir(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := d.NewStaging()
	if _, err := s.WriteAt(bytes.Repeat([]byte("a"), 1000), 0); err != nil {
		t.Fatal(err)
	}
	s.SetSource("k", "v0")
	s.WriteAt([]byte("b"), 500) // the version being uploaded
	c, err := s.CopyTo(d)
	if err != nil {
		t.Fatal(err)
	}
	c.WriteAt([]byte("c"), 10) // the next version
	s.SetSource("k", "v1")     // the upload of s completed
	for _, r := range []struct {
		off, end int64
		etag     string
		ok       bool
	}{{0, 10, "v1", true}, {10, 11, "", false}, {11, 1000, "v1", true}, {400, 600, "v1", true}} {
		if _, etag, ok := c.Unchanged(r.off, r.end); ok != r.ok || etag != r.etag {
			t.Errorf("[%d, %d): %q %v, want %q %v", r.off, r.end, etag, ok, r.etag, r.ok)
		}
	}

	// An original changed after the copy says nothing of the copy.
	c2, err := c.CopyTo(d)
	if err != nil {
		t.Fatal(err)
	}
	c.WriteAt([]byte("d"), 20)
	c.SetSource("k", "v2")
	if _, etag, _ := c2.Unchanged(0, 10); etag == "v2" {
		t.Error("a copy took the source of an original changed after it")
	}
}

// A copy made inside the kernel (copy_file_range, used where the file
// system shares blocks) holds the same bytes, up to an odd size, and the
// same unchanged ranges.
func TestCopyInTheKernel(t *testing.T) {
	d, err := OpenDir(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	d.reflinks = true // whatever this file system is
	s, _ := d.NewStaging()
	data := make([]byte, 3<<20+123)
	for i := range data {
		data[i] = byte(i*7 + i>>13)
	}
	if _, err := s.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	s.SetSource("k", "v")
	c, err := s.CopyTo(d)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data)+10)
	n, _ := c.ReadAt(got, 0)
	if !bytes.Equal(got[:n], data) {
		t.Fatalf("the copy holds %d other bytes", n)
	}
	if _, etag, ok := c.Unchanged(0, int64(len(data))); !ok || etag != "v" {
		t.Errorf("the copy's unchanged ranges: %q %v", etag, ok)
	}
	if used := d.Used(); used != 2*int64(len(data)) {
		t.Errorf("%d bytes accounted for the file and its copy, want %d", used, 2*len(data))
	}
}
