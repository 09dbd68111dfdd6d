package cache

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestListings(t *testing.T) {
	now := time.Unix(100, 0)
	l := NewListings(time.Second, func() time.Time { return now })
	if known, _, _, _ := l.Lookup("d/", "x"); known {
		t.Fatal("empty cache knows something")
	}
	l.Put("d/", map[string]bool{"file": false, "sub": true})
	if known, exists, isDir, _ := l.Lookup("d/", "sub"); !known || !exists || !isDir {
		t.Fatal("sub")
	}
	if known, exists, _, _ := l.Lookup("d/", "nope"); !known || exists {
		t.Fatal("absent name")
	}
	made, file1, ok := l.Stamps("d/", "file")
	if !ok {
		t.Fatal("no stamps of a fresh list")
	}
	_, new1, _ := l.Stamps("d/", "new")
	l.Add("d/", "new", false)
	_, new2, _ := l.Stamps("d/", "new")
	_, file2, _ := l.Stamps("d/", "file")
	l.Remove("d/", "file", false)
	made2, file3, _ := l.Stamps("d/", "file")
	_, new3, _ := l.Stamps("d/", "new")
	l.Remove("d/", "sub", false) // kind differs: kept
	if new1 == new2 || file2 == file3 {
		t.Fatalf("stamps of new %d, %d and of file %d, %d: a change keeps the name's stamp", new1, new2, file2, file3)
	}
	if file1 != file2 || new2 != new3 || made != made2 {
		t.Fatalf("stamps of file %d, %d, of new %d, %d, of the list %d, %d: a change to one name changed another's, or the list's",
			file1, file2, new2, new3, made, made2)
	}
	l.Put("d/", map[string]bool{"file": false, "sub": true})
	if made3, file4, _ := l.Stamps("d/", "file"); made3 == made || file4 == file3 {
		t.Fatal("a new list keeps the stamps of the one before")
	}
	l.Add("d/", "new", false)
	l.Remove("d/", "file", false)
	if _, exists, _, _ := l.Lookup("d/", "new"); !exists {
		t.Fatal("added name")
	}
	if _, exists, _, _ := l.Lookup("d/", "file"); exists {
		t.Fatal("removed name")
	}
	if _, exists, _, _ := l.Lookup("d/", "sub"); !exists {
		t.Fatal("directory removed as a file")
	}
	now = now.Add(time.Second)
	if _, _, ok := l.Stamps("d/", "new"); ok {
		t.Fatal("an expired list has stamps")
	}
	if known, _, _, stale := l.Lookup("d/", "new"); known || stale != 2 {
		t.Fatal("expired list used")
	}
	l.Put("a/b/", nil)
	l.ForgetBelow("a/")
	if known, _, _, _ := l.Lookup("a/b/", "x"); known {
		t.Fatal("ForgetBelow")
	}
	if off := NewListings(0, nil); func() bool { off.Put("d/", nil); k, _, _, _ := off.Lookup("d/", "x"); return k }() {
		t.Fatal("ttl 0 caches")
	}
}

func TestStagingIsPrivateAndUnlinked(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	d, err := OpenDir(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache dir mode %v", fi.Mode())
	}
	s, err := d.NewStaging()
	if err != nil {
		t.Fatal(err)
	}
	s.WriteAt([]byte("hello"), 3)
	buf := make([]byte, 8)
	if n, _ := s.ReadAt(buf, 0); n != 8 || string(buf[3:]) != "hello" {
		t.Fatalf("read %q", buf)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("staging file visible in the cache dir: %v", entries)
	}
	if d.Used() != 5 || d.Open() != 1 { // the hole before takes no room
		t.Fatalf("used %d open %d", d.Used(), d.Open())
	}
	s.Remove()
	if d.Used() != 0 || d.Open() != 0 {
		t.Fatalf("after close: used %d open %d", d.Used(), d.Open())
	}
}

func TestSpaceLimit(t *testing.T) {
	d, _ := OpenDir(t.TempDir(), 10)
	s, _ := d.NewStaging()
	defer s.Remove()
	other, _ := d.NewStaging()
	if _, err := s.WriteAt(make([]byte, 5), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := other.WriteAt(make([]byte, 5), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteAt([]byte{1}, 5); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("over the limit with nothing to evict: %v", err)
	}
	// With uploads under way, the writer waits until space is freed.
	asked := askOnce(d, true)
	done := make(chan error)
	go func() { _, err := s.WriteAt([]byte{1}, 5); done <- err }()
	waitForWriter(t, asked, done)
	other.Remove() // an upload finished: frees 5 bytes
	if err := <-done; err != nil {
		t.Fatalf("waiting writer: %v", err)
	}
	if d.Used() != 6 {
		t.Fatalf("used %d, want 6", d.Used())
	}
}

// A writer short of space waits a moment for files whose content the
// bucket has: the kernel releases a closed file after close returns.
func TestSpaceLimitWaitsForUploadedFiles(t *testing.T) {
	defer func(g time.Duration) { releaseGrace = g }(releaseGrace)
	releaseGrace = time.Hour
	d, _ := OpenDir(t.TempDir(), 10)
	closed, _ := d.NewStaging()
	closed.WriteAt(make([]byte, 6), 0)
	closed.MarkUploaded()
	next, _ := d.NewStaging()
	defer next.Remove()
	asked := askOnce(d, false) // no upload under way
	done := make(chan error)
	go func() { _, err := next.WriteAt(make([]byte, 6), 0); done <- err }()
	waitForWriter(t, asked, done)
	closed.Remove() // the release
	if err := <-done; err != nil {
		t.Fatalf("writer waiting for a release: %v", err)
	}

	// A file changed since its upload frees nothing by being released.
	edited, _ := d.NewStaging()
	defer edited.Remove()
	edited.WriteAt(make([]byte, 2), 0)
	edited.MarkUploaded()
	edited.WriteAt([]byte{1}, 0)
	if _, err := next.WriteAt(make([]byte, 4), 6); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("over the limit with only changed files: %v", err)
	}
	// An uploaded file that stays open: ENOSPC after the grace.
	edited.MarkUploaded()
	releaseGrace = time.Millisecond
	if _, err := next.WriteAt(make([]byte, 4), 6); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("over the limit after the grace: %v", err)
	}
	if d.Used() != 8 {
		t.Fatalf("used %d, want 8", d.Used())
	}
}

// askOnce makes the writers of d that are short of space ask whether
// waiting helps (busy is the answer); the channel closes at the first ask.
func askOnce(d *Dir, busy bool) <-chan struct{} {
	asked := make(chan struct{})
	var once sync.Once
	d.SetEvictable(func() bool {
		once.Do(func() { close(asked) })
		return busy
	})
	return asked
}

// waitForWriter returns once the writer has asked, and fails if it is
// done first.
func waitForWriter(t *testing.T, asked <-chan struct{}, done <-chan error) {
	t.Helper()
	select {
	case <-asked:
	case err := <-done:
		t.Fatalf("writer did not wait for space: %v", err)
	}
}

// DropCached lets a range's pages go from memory; the content stays.
func TestDropCached(t *testing.T) {
	d, _ := OpenDir(t.TempDir(), 0)
	s, _ := d.NewStaging()
	data := make([]byte, 4<<20)
	rand.Read(data)
	if _, err := s.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.DropCached(0, 2<<20); err != nil {
		t.Fatal(err)
	}
	resident := residentPages(t, s, int64(len(data)))
	for i, in := range resident {
		if dropped := int64(i)*4096 < 2<<20; in == dropped {
			t.Fatalf("page %d resident=%v after dropping the first 2 MiB", i, in)
		}
	}
	got := make([]byte, len(data))
	if _, err := s.ReadAt(got, 0); err != nil && err != io.EOF || !bytes.Equal(got, data) {
		t.Fatalf("content changed by DropCached: %v", err)
	}
	s.Remove()
	if err := s.DropCached(0, 1); err != nil {
		t.Fatalf("DropCached after Remove: %v", err)
	}
}

// residentPages reports, per 4 KiB page of st's first size bytes, whether
// it is in the page cache.
func residentPages(t *testing.T, st *Staging, size int64) []bool {
	t.Helper()
	var out []bool
	st.withFile(func(f *os.File) error {
		m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(m)
		vec := make([]byte, (size+4095)/4096)
		_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0])))
		if errno != 0 {
			t.Fatal(errno)
		}
		for _, v := range vec {
			out = append(out, v&1 != 0)
		}
		return nil
	})
	return out
}

func TestJournal(t *testing.T) {
	for _, inXattr := range []bool{true, false} {
		d, j := writebackDir(t)
		if inXattr && !j.inXattr {
			t.Fatal("this test machine's file system takes user xattrs; the probe said no")
		}
		j.inXattr = inXattr
		if _, err := d.EnableWriteback("ns"); err == nil {
			t.Fatal("a second mount got the journal")
		}
		s, _ := d.NewStaging()
		s.WriteAt([]byte("data"), 0)
		orphan, _ := d.NewStaging()
		rec := Record{ID: "a", Key: "k", File: s.Name(), Size: 4, Meta: map[string]string{"mode": "33188"}, Seq: 1}
		if err := j.Add(&rec, s); err != nil {
			t.Fatal(err)
		}
		rec.Key = "renamed"
		if err := j.Put(rec, s); err != nil {
			t.Fatal(err)
		}
		// An older version of the same ID loses to the newer one.
		older, _ := d.NewStaging()
		if err := j.Add(&Record{ID: "a", Key: "old", File: older.Name(), Seq: 0}, older); err != nil && inXattr {
			t.Fatal(err)
		}
		if !inXattr {
			// One record file per ID: re-put the newest.
			j.Put(rec, s)
		}
		os.WriteFile(filepath.Join(j.dir, ".tmp-torn"), []byte(`{"ID":`), 0o600)
		recs, err := j.Load()
		if err != nil || len(recs) != 1 || recs[0].Key != "renamed" {
			t.Fatalf("xattr=%v load: %+v %v", inXattr, recs, err)
		}
		d.RemoveUnjournaled(recs)
		if _, err := os.Stat(orphan.Name()); !os.IsNotExist(err) {
			t.Fatalf("xattr=%v: unacknowledged staging file kept", inXattr)
		}
		if _, err := os.Stat(s.Name()); err != nil {
			t.Fatalf("xattr=%v: journaled staging file removed", inXattr)
		}
		j.Done(rec, s, true, false)
		if recs, _ := j.Load(); len(recs) != 0 {
			t.Fatalf("xattr=%v: record left after Done: %+v", inXattr, recs)
		}
		j.Close()
	}
}

// Of two records of one key (IDs differ: a crash inside a rename onto a
// queued file leaves the renamed file's record and the target's), Load
// keeps the one bound to the key last and removes the other with its
// staged file, in both forms of the journal.
func TestJournalKeepsTheNewestRecordOfAKey(t *testing.T) {
	for _, inXattr := range []bool{true, false} {
		d, j := writebackDir(t)
		j.inXattr = inXattr
		add := func(id string, seq int64) *Staging {
			s, _ := d.NewStaging()
			s.WriteAt([]byte(id), 0)
			if err := j.Add(&Record{ID: id, Key: "k", File: s.Name(), Size: int64(len(id)), Seq: seq}, s); err != nil {
				t.Fatal(err)
			}
			return s
		}
		renamed := add("renamed", 2)
		target := add("target", 1)
		other, _ := d.NewStaging()
		if err := j.Add(&Record{ID: "other", Key: "elsewhere", File: other.Name(), Seq: 0}, other); err != nil {
			t.Fatal(err)
		}
		recs, err := j.Load()
		if err != nil || len(recs) != 2 {
			t.Fatalf("xattr=%v load: %+v %v", inXattr, recs, err)
		}
		for _, r := range recs {
			if r.Key == "k" && r.ID != "renamed" {
				t.Fatalf("xattr=%v: kept %q for k, want the record bound last", inXattr, r.ID)
			}
		}
		if _, err := os.Stat(target.Name()); !os.IsNotExist(err) {
			t.Fatalf("xattr=%v: the replaced record's staged file is left", inXattr)
		}
		if _, err := os.Stat(filepath.Join(j.dir, "target.json")); !os.IsNotExist(err) {
			t.Fatalf("xattr=%v: the replaced record's file is left", inXattr)
		}
		if _, err := os.Stat(renamed.Name()); err != nil {
			t.Fatalf("xattr=%v: the kept record's staged file: %v", inXattr, err)
		}
		j.Close()
	}
}

// readAll reads a staging file's staged content.
func readAll(t *testing.T, s *Staging, n int) []byte {
	t.Helper()
	buf := make([]byte, n+10)
	got, err := s.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return buf[:got]
}

// A reused staging file never shows its earlier content: not past the
// staged size, not in a hole, not after a truncate that extends it.
func TestReusedStagingHasNoStaleBytes(t *testing.T) {
	for _, named := range []bool{false, true} {
		var d *Dir
		if named {
			d, _ = writebackDir(t)
		} else {
			d, _ = OpenDir(t.TempDir(), 0)
		}
		old, _ := d.NewStaging()
		old.WriteAt(bytes.Repeat([]byte{'A'}, 100), 0)
		if named {
			if err := writeXattrRecord(old, []byte(`{"ID":"old"}`)); err != nil {
				t.Fatal(err)
			}
		}
		old.Remove()
		if _, err := old.ReadAt(make([]byte, 1), 0); !errors.Is(err, os.ErrClosed) {
			t.Fatalf("named=%v: read after Remove: %v", named, err)
		}
		s, _ := d.NewStaging()
		if named && s.Name() != old.Name() {
			t.Fatalf("staging file not reused: %s, then %s", old.Name(), s.Name())
		}
		if named {
			if raw, err := readXattr(s.Name()); err == nil && !isTombstone(raw) {
				t.Fatal("reused file kept the old journal record")
			}
		}
		if got := readAll(t, s, 100); len(got) != 0 {
			t.Fatalf("named=%v: fresh file reads %q", named, got)
		}
		s.WriteAt([]byte("BBBB"), 0)
		if got := readAll(t, s, 100); string(got) != "BBBB" {
			t.Fatalf("named=%v: after one write %q", named, got)
		}
		s.Truncate(20) // extended over stale bytes
		if got := readAll(t, s, 100); !bytes.Equal(got, append([]byte("BBBB"), make([]byte, 16)...)) {
			t.Fatalf("named=%v: extended by truncate over stale bytes %q", named, got)
		}
		s.WriteAt([]byte("C"), 50) // a hole over stale bytes
		want := append([]byte("BBBB"), make([]byte, 46)...)
		want = append(want, 'C')
		if got := readAll(t, s, 100); !bytes.Equal(got, want) {
			t.Fatalf("named=%v: hole reads %q", named, got)
		}
		s.Truncate(80)
		want = append(want, make([]byte, 29)...)
		if got := readAll(t, s, 100); !bytes.Equal(got, want) {
			t.Fatalf("named=%v: extended by truncate %q", named, got)
		}
		if d.Used() != 5 { // the bytes written: holes take no room
			t.Fatalf("used %d", d.Used())
		}
		s.Remove()
		if d.Used() != 0 || d.Open() != 0 {
			t.Fatalf("after Remove: used %d open %d", d.Used(), d.Open())
		}
		d.Close()
		if named {
			if entries, _ := os.ReadDir(d.named); len(entries) != 0 {
				t.Fatalf("idle staging files left after Close: %v", entries)
			}
		}
	}
}

// Beyond the idle cap a staging file is deleted; kept or deleted, none
// keeps its journal record.
func TestIdleCap(t *testing.T) {
	d, j := writebackDir(t)
	d.idleCap = 1
	var files []*Staging
	for i := 0; i < 3; i++ {
		s, _ := d.NewStaging()
		s.WriteAt([]byte("data"), 0)
		if err := j.Add(&Record{ID: fmt.Sprint(i), Key: "k", File: s.Name(), Size: 4}, s); err != nil {
			t.Fatal(err)
		}
		files = append(files, s)
	}
	for _, s := range files {
		s.Remove()
	}
	d.spares.Wait() // a spare that finds the pool full is deleted
	if entries, _ := os.ReadDir(d.named); len(entries) != 1 {
		t.Fatalf("%d staging files left, want the 1 idle one", len(entries))
	}
	if recs, _ := j.Load(); len(recs) != 0 {
		t.Fatalf("records left: %+v", recs)
	}
	d.Close()
	j.Close()
}

// reviveRecord puts r back on its file as a crash might: the removal of a
// ghost's record was never made durable.
func reviveRecord(t *testing.T, r Record) {
	t.Helper()
	raw, _ := json.Marshal(r)
	if err := unix.Setxattr(r.File, recordXattr, raw, 0); err != nil {
		t.Fatal(err)
	}
}

// The record of an upload done goes without an fsync (a ghost). Brought
// back by a crash it is dropped once its file holds other bytes, replayed
// while the bytes are the same; Settle, reuse with a new record, and
// deletion each make it gone for good.
// Each file's tombstone is its own (ext4 would share identical attribute
// blocks, and then free and allocate them at every record), and Load
// takes none for a record.
func TestTombstones(t *testing.T) {
	d, j := writebackDir(t)
	var seen [][]byte
	for _, id := range []string{"a", "b"} {
		s, _ := d.NewStaging()
		defer s.Remove()
		s.WriteAt([]byte("data"), 0)
		rec := Record{ID: id, Key: id, File: s.Name(), Size: 4}
		if err := j.Add(&rec, s); err != nil {
			t.Fatal(err)
		}
		if err := j.Done(rec, s, true, false); err != nil {
			t.Fatal(err)
		}
		raw, err := readXattr(s.Name())
		if err != nil || !isTombstone(raw) {
			t.Fatalf("after Done: %q %v", raw, err)
		}
		seen = append(seen, raw)
	}
	if bytes.Equal(seen[0], seen[1]) {
		t.Fatalf("two files have the same tombstone %q", seen[0])
	}
	if recs, err := j.Load(); err != nil || len(recs) != 0 {
		t.Fatalf("Load after Done: %+v %v", recs, err)
	}
}

func TestGhosts(t *testing.T) {
	d, j := writebackDir(t)
	if !j.inXattr {
		t.Fatal("this test machine's file system takes user xattrs; the probe said no")
	}
	s, _ := d.NewStaging()
	s.WriteAt([]byte("data"), 0)
	rec := Record{ID: "a", Key: "k", File: s.Name(), Size: 4}
	if err := j.Add(&rec, s); err != nil {
		t.Fatal(err)
	}
	if rec.Sum == "" {
		t.Fatal("a small file's record has no sum")
	}
	f := s.f
	j.Done(rec, s, true, true)
	if !d.isGhost(f) {
		t.Fatal("uploaded record not noted as a ghost")
	}
	// Revived over the same bytes it is replayed (the integration tests
	// replay summed records after SIGKILL).
	reviveRecord(t, rec)
	if recs, _ := j.Load(); len(recs) != 1 || recs[0].Sum != rec.Sum {
		t.Fatalf("revived record not loaded: %+v", recs)
	}
	j.Settle("other")
	if !d.isGhost(f) {
		t.Fatal("settling another key settled this one")
	}
	j.Settle("k")
	if d.isGhost(f) {
		t.Fatal("Settle left the ghost")
	}

	// Reused for other bytes: the revived record is a ghost.
	j.Done(rec, s, true, true)
	s.Remove()
	s2, _ := d.NewStaging()
	if s2.Name() != rec.File {
		t.Fatal("staging file not reused")
	}
	s2.WriteAt([]byte("DATA"), 0)
	reviveRecord(t, rec)
	if _, err := d.OpenNamed(rec); !errors.Is(err, ErrGhost) {
		t.Fatalf("ghost over other bytes: %v", err)
	}
	rec2 := Record{ID: "b", Key: "k2", File: s2.Name(), Size: 4}
	if err := j.Add(&rec2, s2); err != nil {
		t.Fatal(err)
	}
	if d.isGhost(f) {
		t.Fatal("a new record's fsync did not lay the ghost")
	}

	// Deleted (no room in the pool): the ghost is laid first.
	j.Done(rec2, s2, true, true)
	d.idleCap = 0
	d.idle = nil
	s2.Remove()
	if d.isGhost(f) || len(d.ghosts.byKey) != 0 {
		t.Fatal("deleted file left a ghost")
	}
	if _, err := os.Stat(rec2.File); !os.IsNotExist(err) {
		t.Fatal("staging file not deleted")
	}
	d.Close()
	j.Close()
}

// Spares: the first staging file made on demand starts a batch of durable
// empty files in the idle pool, which the next ones come from; Close
// waits for a batch still being made and leaves only files in use.
func TestSpares(t *testing.T) {
	for _, closeEarly := range []bool{false, true} {
		d, _ := writebackDir(t)
		if !d.reuseNamed {
			t.Fatal("this test machine's file system takes user xattrs; the probe said no")
		}
		first, err := d.NewStaging()
		if err != nil {
			t.Fatal(err)
		}
		inUse := 1
		if !closeEarly {
			d.spares.Wait()
			d.mu.Lock()
			idle := len(d.idle)
			d.mu.Unlock()
			if want := min(spareBatch, d.idleCap); idle != want {
				t.Fatalf("%d idle files after a batch, want %d", idle, want)
			}
			second, err := d.NewStaging()
			if err != nil {
				t.Fatal(err)
			}
			if !second.durable || first.durable {
				t.Fatalf("durable: spare %v, made on demand %v", second.durable, first.durable)
			}
			inUse++
		}
		d.Close()
		entries, err := os.ReadDir(d.named)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != inUse {
			t.Fatalf("close early %v: %d files left in %s, want the %d in use", closeEarly, len(entries), d.named, inUse)
		}
	}
}

// writebackDir is a cache directory in write-back mode, closed at the end
// of the test (which waits for spare staging files being made).
func writebackDir(t *testing.T) (*Dir, *Journal) {
	t.Helper()
	d, err := OpenDir(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	j, err := d.EnableWriteback("ns")
	if err != nil {
		t.Fatal(err)
	}
	return d, j
}

// At the bound on open staging files a writer waits while uploads are
// under way, and goes on when a file is handed back; with nothing under way
// it goes on at once (the system's limit decides).
func TestNewStagingWaitsForDescriptors(t *testing.T) {
	d, err := OpenDir(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.maxOpen = 2
	a, _ := d.NewStaging()
	b, _ := d.NewStaging()
	defer b.Remove()
	asked := askOnce(d, true)
	done := newStagingAsync(d)
	waitForWriter(t, asked, done)
	select {
	case err := <-done:
		t.Fatalf("a writer at the bound did not wait: %v", err)
	default:
	}
	a.Remove()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c, _ := d.NewStaging() // two open again
	defer c.Remove()
	askOnce(d, false)
	s, err := d.NewStaging()
	if err != nil {
		t.Fatal(err)
	}
	s.Remove()
}

// The last upload ends while a writer at the bound asks the queue, which
// answered that one was under way: its wake-up came before the writer
// waited, and the writer must not wait for another that never comes.
func TestNewStagingSeesAnUploadEndWhileAsking(t *testing.T) {
	d, _ := OpenDir(t.TempDir(), 0)
	defer d.Close()
	d.maxOpen = 1
	a, _ := d.NewStaging() // its file stays open: no slot comes free
	defer a.Remove()
	var asks atomic.Int32
	d.SetEvictable(func() bool {
		if asks.Add(1) > 1 {
			return false // nothing under way any more
		}
		d.Freed() // the upload ends before the writer waits
		return true
	})
	done := newStagingAsync(d)
	waitWritten(t, done)
}

// newStagingAsync opens and removes a staging file in a goroutine; the
// channel gets its error.
func newStagingAsync(d *Dir) <-chan error {
	done := make(chan error, 1)
	go func() {
		s, err := d.NewStaging()
		if err == nil {
			s.Remove()
		}
		done <- err
	}()
	return done
}

// Reserve allocates disk blocks without changing what is staged; an idle
// file gives back more of them than it may keep, and a file that reuses one
// reads none of them.
func TestReserve(t *testing.T) {
	d, _ := OpenDir(t.TempDir(), 0)
	defer d.Close()
	s, _ := d.NewStaging()
	allocated := func(s *Staging) int64 {
		var st unix.Stat_t
		s.withFile(func(f *os.File) error { return unix.Fstat(int(f.Fd()), &st) })
		return st.Blocks * 512
	}
	s.WriteAt([]byte("data"), 0)
	if err := s.Reserve(0, 4<<20); err != nil {
		t.Fatal(err)
	}
	if got := allocated(s); got < 4<<20 {
		t.Fatalf("%d bytes allocated after reserving 4 MiB", got)
	}
	if got := readAll(t, s, 100); string(got) != "data" || d.Used() != 4 {
		t.Fatalf("reserving changed what is staged: %q, %d bytes used", got, d.Used())
	}
	d.mu.Lock()
	_, reclaimable := d.reused[s]
	d.mu.Unlock()
	if !reclaimable {
		t.Fatal("reserved blocks past the size are not reclaimable on a full disk")
	}
	s.Remove() // 4 MiB is more than an idle file keeps
	r, _ := d.NewStaging()
	if got := allocated(r); got != 0 {
		t.Fatalf("the idle file kept %d bytes of blocks", got)
	}
	if got := readAll(t, r, 100); len(got) != 0 {
		t.Fatalf("reused file reads %q", got)
	}
	r.Remove()
}

// Under ensure_diskfree, blocks an idle staging file keeps for reuse count
// against the free space: a writer short of it frees them, also those of
// files whose uploads end while it waits, rather than fail.
func TestReserveFreesBlocksKeptForReuse(t *testing.T) {
	const mib = 1 << 20
	d, _ := OpenDir(t.TempDir(), 0)
	defer d.Close()
	stage := smallDisk(t, d, 8*mib)
	a, b := stage(mib), stage(mib)
	a.MarkUploaded()
	b.MarkUploaded()
	// 6 MiB free; 1 MiB more must leave 6.5: both files' blocks must go.
	d.SetMinFree(6*mib + mib/2)
	asked := make(chan struct{}, 2)
	d.SetEvictable(func() bool { asked <- struct{}{}; return true })
	c, _ := d.NewStaging()
	defer c.Remove()
	done := make(chan error, 1)
	go func() { _, err := c.WriteAt(make([]byte, mib), 0); done <- err }()
	for _, uploaded := range []*Staging{a, b} {
		waitForWriter(t, asked, done)
		uploaded.Remove() // its upload ended: idle, keeping its blocks
	}
	waitWritten(t, done)
}

// The last uploaded file let go while a writer short of room asks the
// queue (which answers that nothing is under way any more): the writer
// looks again and frees the blocks the file left for reuse, rather than
// fail. The kernel sends a release after its close has returned, so the
// next file's writes race it (CI's TestEnsureDiskFree).
func TestReserveSeesAReleaseWhileAsking(t *testing.T) {
	const mib = 1 << 20
	d, _ := OpenDir(t.TempDir(), 0)
	defer d.Close()
	stage := smallDisk(t, d, 8*mib)
	a := stage(mib)
	a.MarkUploaded()
	d.SetMinFree(6*mib + mib/2)
	var once sync.Once
	d.SetEvictable(func() bool {
		once.Do(a.Remove) // idle, keeping its blocks
		return false
	})
	c, _ := d.NewStaging()
	defer c.Remove()
	done := make(chan error, 1)
	go func() { _, err := c.WriteAt(make([]byte, mib), 0); done <- err }()
	waitWritten(t, done)
}

// Room made on the disk by something else while a writer asks the queue
// (another writer freeing blocks kept for reuse, a file deleted beside the
// cache) comes with no wake-up: the writer still sees it.
func TestReserveSeesRoomMadeWhileAsking(t *testing.T) {
	const mib = 1 << 20
	d, _ := OpenDir(t.TempDir(), 0)
	defer d.Close()
	var others atomic.Int64 // bytes of the disk that others use
	others.Store(2 * mib)
	defer func(f func(string) (int64, int64, error)) { statDisk = f }(statDisk)
	statDisk = func(string) (int64, int64, error) { return 8 * mib, 8*mib - others.Load(), nil }
	d.SetMinFree(6*mib + mib/2)
	d.SetEvictable(func() bool {
		others.Store(0) // deleted meanwhile
		return false
	})
	c, _ := d.NewStaging()
	defer c.Remove()
	if _, err := c.WriteAt(make([]byte, mib), 0); err != nil {
		t.Fatalf("writer: %v", err)
	}
}

// smallDisk makes d's disk size bytes large, holding only the blocks of
// the staging files stage makes (each of n bytes, allocated).
func smallDisk(t *testing.T, d *Dir, size int64) (stage func(n int) *Staging) {
	var mu sync.Mutex
	var files []*os.File
	old := statDisk
	t.Cleanup(func() { statDisk = old })
	statDisk = func(string) (int64, int64, error) {
		mu.Lock()
		defer mu.Unlock()
		var allocated int64
		for _, f := range files {
			var st unix.Stat_t
			if unix.Fstat(int(f.Fd()), &st) == nil {
				allocated += st.Blocks * 512
			}
		}
		return size, size - allocated, nil
	}
	return func(n int) *Staging {
		s, err := d.NewStaging()
		if err != nil {
			t.Fatal(err)
		}
		s.withFile(func(f *os.File) error {
			mu.Lock()
			files = append(files, f)
			mu.Unlock()
			return nil
		})
		if _, err := s.WriteAt(make([]byte, n), 0); err != nil {
			t.Fatal(err)
		}
		s.Sync() // allocated now, not at writeback
		return s
	}
}

// waitWritten fails unless the writer succeeds within a minute.
func waitWritten(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("writer: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the writer still waits after a minute")
	}
}

// A file larger than the cache: when a writer is short of room, bytes a
// streamed upload has sent leave the disk, and it waits for parts in
// flight. What left can no longer be read, written or truncated into; the
// space it took is given back, and emptying the file starts afresh.
func TestDropSent(t *testing.T) {
	const mib = 1 << 20
	d, _ := OpenDir(t.TempDir(), 3*mib)
	s, _ := d.NewStaging()
	defer s.Remove()
	data := make([]byte, 5*mib)
	rand.Read(data)
	if _, err := s.WriteAt(data[:3*mib], 0); err != nil {
		t.Fatal(err)
	}
	// Nothing sent or in flight: over the limit is ENOSPC, as before.
	if _, err := s.WriteAt(data[3*mib:4*mib], 3*mib); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("over the limit with nothing sent: %v", err)
	}
	// Two parts in flight: the writer waits for them, then their bytes go.
	s.Sending("k", 2*mib, 0)
	asked := askOnce(d, false)
	done := make(chan error)
	go func() { _, err := s.WriteAt(data[3*mib:5*mib], 3*mib); done <- err }()
	waitForWriter(t, asked, done)
	s.Sending("k", 2*mib, 2*mib)
	if err := <-done; err != nil {
		t.Fatalf("waiting writer: %v", err)
	}
	if s.Dropped() != 2*mib || d.Used() != 3*mib {
		t.Fatalf("dropped %d, used %d; want 2 MiB and 3 MiB", s.Dropped(), d.Used())
	}
	got := make([]byte, 3*mib)
	if _, err := s.ReadAt(got, 2*mib); err != nil || !bytes.Equal(got, data[2*mib:]) {
		t.Fatalf("read of what is still staged: %v", err)
	}
	if _, err := s.ReadAt(got[:10], mib); !errors.Is(err, ErrDropped) {
		t.Errorf("read of a dropped byte: %v", err)
	}
	if _, err := s.WriteAt([]byte{1}, 0); !errors.Is(err, ErrDropped) {
		t.Errorf("write of a dropped byte: %v", err)
	}
	if err := s.Truncate(mib); !errors.Is(err, ErrDropped) {
		t.Errorf("truncate into dropped bytes: %v", err)
	}
	if _, err := s.CopyTo(d); !errors.Is(err, ErrDropped) {
		t.Errorf("copy of a file with dropped bytes: %v", err)
	}
	// Once the stream ended (completed or aborted), nothing more goes.
	s.StreamEnded()
	if _, err := s.WriteAt([]byte{1}, 5*mib); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("over the limit once the stream ended: %v", err)
	}
	if err := s.Truncate(0); err != nil || s.Dropped() != 0 || d.Used() != 0 {
		t.Fatalf("emptied: %v, dropped %d, used %d", err, s.Dropped(), d.Used())
	}
	if _, err := s.WriteAt(data[:mib], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadAt(got[:mib], 0); err != nil || !bytes.Equal(got[:mib], data[:mib]) {
		t.Fatalf("read after emptying: %v", err)
	}
}

// Holes left by writes past the end and truncates up are not in the
// cache's used bytes; the writes that fill them are, and what a truncate
// down, a drop or Remove gives back is what was accounted.
func TestHolesTakeNoRoom(t *testing.T) {
	d, _ := OpenDir(t.TempDir(), 2000)
	s, _ := d.NewStaging()
	used := func(want int64, what string) {
		t.Helper()
		if got := d.Used(); got != want {
			t.Fatalf("%s: used %d, want %d", what, got, want)
		}
	}
	s.WriteAt(bytes.Repeat([]byte{'a'}, 10), 1000) // [0,1000) a hole
	used(10, "write past the end")
	if err := s.Truncate(5000); err != nil { // [1010,5000) a hole
		t.Fatal(err)
	}
	used(10, "truncate up")
	if _, err := s.WriteAt(bytes.Repeat([]byte{'b'}, 20), 995); err != nil { // fills 5 of the first hole
		t.Fatal(err)
	}
	used(20, "write over a hole's end, the data and the next hole's start")
	if _, err := s.WriteAt(make([]byte, 1981), 2000); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("filling 1981 bytes of a hole past the limit: %v", err)
	}
	if _, err := s.WriteAt(make([]byte, 70), 2000); err != nil {
		t.Fatal(err)
	}
	used(90, "write into a hole")
	if err := s.Truncate(2030); err != nil { // cuts 40 written bytes and a hole
		t.Fatal(err)
	}
	used(50, "truncate down")
	if got := readAll(t, s, 3000); len(got) != 2030 || got[994] != 0 || got[995] != 'b' || got[1014] != 'b' || got[1015] != 0 {
		t.Fatalf("content after the writes: %d bytes", len(got))
	}
	if err := s.Reserve(0, 1000); err != nil { // blocks for the first hole
		t.Fatal(err)
	}
	used(50+995, "reserve over a hole")
	s.Remove()
	used(0, "Remove")
	d.Close()
}

func TestHoles(t *testing.T) {
	var h spans
	h = h.add(0, 10).add(10, 20).add(30, 40)
	if len(h) != 2 || h.total() != 30 || h.in(5, 35) != 20 {
		t.Fatalf("%v: total %d, in [5,35) %d", h, h.total(), h.in(5, 35))
	}
	h = h.cut(5, 32)
	if len(h) != 2 || h[0] != (span{0, 5}) || h[1] != (span{32, 40}) {
		t.Fatalf("after filling [5,32): %v", h)
	}
	if h.cut(100, 200).total() != 13 || h.cut(0, 40).total() != 0 {
		t.Fatalf("fills outside and over all: %v", h)
	}
}

// Random writes, truncates and reservations: the cache's used bytes are
// always the bytes of the file written (or reserved) and not cut off since
// — what a model of the file counts — and Remove gives all of them back;
// the file reads what the model holds (holes as zeros, also over a reused
// file's stale bytes).
func TestUsedFollowsWrittenBytes(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	for round := range 20 {
		d, _ := OpenDir(t.TempDir(), 0)
		if round%2 == 1 { // named staging files, reused with stale bytes
			d, _ = writebackDir(t)
		}
		for range round % 4 { // leave files with stale bytes in the idle pool
			old, _ := d.NewStaging()
			old.WriteAt(bytes.Repeat([]byte{'x'}, 5000), 0)
			old.Remove()
		}
		s, _ := d.NewStaging()
		// The model: which bytes of the file hold data, and the content.
		var written []bool
		var content []byte
		for step := range 200 {
			off := rng.Int64N(3000)
			n := rng.Int64N(300)
			switch rng.IntN(4) {
			case 0, 1:
				data := make([]byte, n)
				for i := range data {
					data[i] = byte(1 + rng.IntN(255))
				}
				if _, err := s.WriteAt(data, off); err != nil {
					t.Fatal(err)
				}
				for int64(len(written)) < off+n {
					written, content = append(written, false), append(content, 0)
				}
				for i := off; i < off+n; i++ {
					written[i] = true
				}
				copy(content[off:], data)
			case 2:
				if err := s.Truncate(off); err != nil {
					t.Fatal(err)
				}
				for int64(len(written)) < off {
					written, content = append(written, false), append(content, 0)
				}
				written, content = written[:off], content[:off]
			case 3:
				n++ // fallocate(2) of nothing is EINVAL
				if err := s.Reserve(off, n); err != nil {
					t.Fatal(err)
				}
				for i := off; i < min(off+n, int64(len(written))); i++ {
					written[i] = true
				}
			}
			var want int64
			for _, w := range written {
				if w {
					want++
				}
			}
			if got := d.Used(); got != want {
				t.Fatalf("round %d step %d: used %d, want %d", round, step, got, want)
			}
		}
		if got := readAll(t, s, 4000); !bytes.Equal(got, content) {
			t.Fatalf("round %d: the file reads other bytes than were written (%d bytes, want %d)", round, len(got), len(content))
		}
		s.Remove()
		if d.Used() != 0 {
			t.Fatalf("round %d: used %d after Remove", round, d.Used())
		}
		d.Close()
	}
}

// Many writers at once at the bound, while others hand files back, never
// hold more descriptors than the staging bound and the idle pool allow: a
// mount replaying its journal under a low descriptor limit ran out of
// descriptors, since a file handed back gave up its slot before dispose let
// go of its descriptor, writers that checked the bound at once all passed
// it, and spares being made did not count in the idle pool. The process's
// descriptor limit here leaves room for exactly those (and the directory
// sync of a batch of spares): one more fails a writer with EMFILE.
func TestStagingDescriptorsStayWithinTheBound(t *testing.T) {
	d, _ := writebackDir(t)
	d.maxOpen, d.idleCap = 4, 2
	d.SetEvictable(func() bool { return true })
	limitDescriptors(t, int(d.maxOpen)+d.idleCap+1)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 40 {
				s, err := d.NewStaging()
				if err != nil {
					t.Error(err)
					return
				}
				s.WriteAt([]byte("data"), 0)
				s.Remove()
			}
		}()
	}
	wg.Wait()
	d.spares.Wait()
}

// limitDescriptors sets the process's descriptor limit so that n more
// descriptors can be opened than are open now, until the test ends.
func limitDescriptors(t *testing.T, n int) {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	highest := 0
	for _, e := range entries {
		fd, _ := strconv.Atoi(e.Name())
		highest = max(highest, fd)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	// New descriptors take the lowest free numbers: the free ones below
	// highest (gaps), then those above it. The listing's own descriptor
	// is listed, and closed since.
	open := len(entries) - 1
	gaps := highest + 1 - open
	limit := syscall.Rlimit{Cur: uint64(highest + 1 + n - gaps), Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &limit); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// A cache directory others share (ossfs's documented use_cache=/tmp) keeps
// its mode — it was made 0700, locking everyone else out of /tmp — and
// the cache goes in a subdirectory of the user's own; one another user
// planted there first is refused. A new or private directory is used as
// it is.
func TestSharedCacheDirectoryStaysShared(t *testing.T) {
	own := fmt.Sprintf("ossmount-%d", os.Geteuid())
	shared := t.TempDir()
	if err := os.Chmod(shared, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDir(shared, 0)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if fi, _ := os.Stat(shared); fi.Mode().Perm() != 0o777 || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("the shared directory is now %v", fi.Mode())
	}
	if want := filepath.Join(shared, own); d.Path() != want {
		t.Errorf("cache in %s, want %s", d.Path(), want)
	}
	if fi, _ := os.Stat(d.Path()); fi.Mode().Perm() != 0o700 {
		t.Errorf("the cache's own directory is %v", fi.Mode())
	}
	for _, path := range []string{filepath.Join(t.TempDir(), "new"), t.TempDir()} {
		os.Chmod(path, 0o700)
		d, err := OpenDir(path, 0)
		if err != nil || d.Path() != path {
			t.Fatalf("%s: cache in %v, %v", path, d, err)
		}
		d.Close()
	}
	planted := t.TempDir()
	os.Chmod(planted, 0o777)
	if err := os.Symlink(t.TempDir(), filepath.Join(planted, own)); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDir(planted, 0); err == nil {
		t.Error("a symbolic link in the cache's place was taken")
	}
	theirs := t.TempDir()
	os.Chmod(theirs, 0o777)
	os.Mkdir(filepath.Join(theirs, own), 0o700)
	if err := os.Chown(filepath.Join(theirs, own), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDir(theirs, 0); err == nil {
		t.Error("another user's directory in the cache's place was taken")
	}
}

// privateDir is a new 0700 directory, which the cache takes as its own
// (t.TempDir's are 0755: the cache would go in a subdirectory, OwnRoot).
func privateDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}
