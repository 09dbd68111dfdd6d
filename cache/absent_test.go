package cache

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// A file staged from the end: its start is refused to reads, writes and
// truncates into it until it is filled in, takes no room until then, and
// is no kept copy; an upload's SetSource moves it to the new object.
func TestAbsentStart(t *testing.T) {
	d, err := OpenDir(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := d.NewStaging()
	const size, end = 10000, 8192
	obj := bytes.Repeat([]byte("0123456789"), size/10)
	if err := s.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteAt(obj[end:], end); err != nil {
		t.Fatal(err)
	}
	s.SetSource("k", "e1")
	s.SetAbsent("k", "e1", end, 42)
	if got := d.Used(); got != size-end {
		t.Fatalf("%d bytes in the cache, want the end's %d", got, size-end)
	}
	buf := make([]byte, 100)
	if _, err := s.ReadAt(buf, end-50); !errors.Is(err, ErrAbsent) {
		t.Fatalf("a read into the start: %v", err)
	}
	if _, err := s.WriteAt(buf, 0); !errors.Is(err, ErrAbsent) {
		t.Fatalf("a write into the start: %v", err)
	}
	if err := s.Truncate(end - 1); !errors.Is(err, ErrAbsent) {
		t.Fatalf("a truncate into the start: %v", err)
	}
	if _, err := s.CopyTo(d); !errors.Is(err, ErrAbsent) {
		t.Fatalf("a copy: %v", err)
	}
	// Past the start all is as usual: an append, a truncate back.
	if _, err := s.WriteAt([]byte("more"), size); err != nil {
		t.Fatal(err)
	}
	if err := s.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadAt(buf, end); err != nil {
		t.Fatal(err)
	}

	// An upload makes it the new object's start.
	s.SetSource("k2", "e2")
	if key, etag, got, crc := s.Absent(); key != "k2" || etag != "e2" || got != end || crc != 42 {
		t.Fatalf("after an upload: %q %q %d %d", key, etag, got, crc)
	}

	if _, err := io.Copy(io.NewOffsetWriter(s.AbsentWriter(), 0), bytes.NewReader(obj[:end])); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AbsentWriter().WriteAt([]byte("x"), end); err == nil {
		t.Fatal("filled in past the start")
	}
	s.Filled()
	if _, _, got, _ := s.Absent(); got != 0 {
		t.Fatalf("filled, and still %d absent", got)
	}
	all := make([]byte, size)
	if _, err := s.ReadAt(all, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(all, obj) {
		t.Fatal("the filled file is not the object")
	}
	if got := d.Used(); got != size {
		t.Fatalf("%d bytes in the cache, want %d", got, size)
	}
	// A fill leaves what is unchanged so: an upload copies it.
	if _, _, ok := s.Unchanged(0, size); !ok {
		t.Fatal("the filled start is not the object's any more")
	}

	// Unfilled, it is no copy to keep.
	s2, _ := d.NewStaging()
	s2.Truncate(size)
	s2.SetSource("k3", "e3")
	s2.SetAbsent("k3", "e3", end, 1)
	d.SetKeepMin(0)
	d.Keep("k3", s2)
	if c := d.LookKept("k3"); c.Staging != nil {
		t.Fatal("a file staged from the end was kept")
	}
	d.Keep("k", s) // filled: kept
	if c := d.LookKept("k"); c.Staging != s {
		t.Fatal("a filled file was not kept")
	}
}
