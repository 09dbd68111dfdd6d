package cache

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ossmount/ossmount/internal/crc64"
)

// keptFile stages size bytes of fill as the object key in version etag.
func keptFile(t *testing.T, d *Dir, key, etag string, size int, fill byte) *Staging {
	t.Helper()
	s, err := d.NewStaging()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteAt(bytes.Repeat([]byte{fill}, size), 0); err != nil {
		t.Fatal(err)
	}
	s.SetSource(key, etag)
	s.MarkUploaded()
	return s
}

func TestKeptFilesGoWhenTheirRoomIsNeeded(t *testing.T) {
	const mib = 1 << 20
	d, err := OpenDir(t.TempDir(), 5*mib) // kept files hold at most 2.5 MiB
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	d.Keep("a", keptFile(t, d, "a", "ea", mib, 'a'))
	d.Keep("b", keptFile(t, d, "b", "eb", mib, 'b'))
	if files, bytes := d.Kept(); files != 2 || bytes != 2*mib {
		t.Fatalf("kept %d files of %d bytes, want 2 of 2 MiB", files, bytes)
	}
	d.Keep("c", keptFile(t, d, "c", "ec", mib, 'c')) // over the share: a goes
	if c := d.TakeKept("a"); c.Staging != nil {
		t.Error("the oldest kept file outlived the bound on kept bytes")
	}

	// Not kept: changed since its source, smaller than KeepMin, or of no
	// known version.
	changed := keptFile(t, d, "x", "ex", mib, 'x')
	changed.WriteAt([]byte("y"), 10)
	d.Keep("x", changed)
	d.Keep("small", keptFile(t, d, "small", "es", KeepMin-1, 's'))
	if c := d.TakeKept("x"); c.Staging != nil {
		t.Error("a file changed since its upload was kept")
	}
	if c := d.TakeKept("small"); c.Staging != nil {
		t.Error("a file below KeepMin was kept")
	}

	// A writer short of room takes it from kept files at once, the
	// oldest first, and only what it needs.
	w, err := d.NewStaging()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(make([]byte, 4*mib), 0); err != nil {
		t.Fatalf("a write with kept files in the way: %v", err)
	}
	if files, _ := d.Kept(); files != 1 {
		t.Errorf("%d files kept after a writer needed the room of one, want 1", files)
	}
	if c := d.TakeKept("b"); c.Staging != nil {
		t.Error("the writer's room came from a newer kept file")
	}
	if _, err := w.WriteAt(make([]byte, 2*mib), 4*mib); !errors.Is(err, ErrNoSpace) {
		t.Errorf("past the cache size: %v, want ErrNoSpace", err)
	}
	if files, _ := d.Kept(); files != 0 {
		t.Errorf("%d files kept after a writer ran out of room", files)
	}
	w.Remove()

	// Taken back, a kept file is the content and version it was, under
	// the name it was renamed to.
	d.Keep("old/d0", keptFile(t, d, "old/d0", "ed", mib, 'd'))
	d.RenameKeptBelow("old/", "new/")
	d.RenameKept("new/d0", "d")
	for _, key := range []string{"old/d0", "new/d0"} {
		if c := d.TakeKept(key); c.Staging != nil {
			t.Errorf("a kept file stayed under %s", key)
		}
	}
	c := d.TakeKept("d")
	s := c.Staging
	if s == nil || c.ETag != "ed" || c.Size != mib || c.Unchecked {
		t.Fatalf("took %+v, want the file of version ed, 1 MiB, checked", c)
	}
	got := make([]byte, mib)
	if _, err := s.ReadAt(got, 0); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{'d'}, mib)) {
		t.Errorf("the file taken back does not hold what was kept (%v)", err)
	}
	if again := d.TakeKept("d"); again.Staging != nil {
		t.Error("a kept file was handed out twice")
	}
	s.Remove()
	if used := d.Used(); used != 0 {
		t.Errorf("%d bytes still accounted with every file removed", used)
	}
}

func TestUnmountRemovesKeptFiles(t *testing.T) {
	dir := t.TempDir()
	d, err := OpenDir(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	d.Keep("a", keptFile(t, d, "a", "ea", KeepMin, 'a'))
	d.Close()
	if n := d.Open(); n != 0 {
		t.Errorf("%d staging files open after Close", n)
	}
	d.Keep("b", keptFile(t, d, "b", "eb", KeepMin, 'b'))
	if files, _ := d.Kept(); files != 0 {
		t.Error("a file was kept after Close")
	}
}

func TestNoKeptCopiesWithoutABudget(t *testing.T) {
	path := privateDir(t)
	earlier, _ := OpenDir(path, 0)
	earlier.PersistKept("ns")
	earlier.Keep("b", keptFile(t, earlier, "b", "eb", KeepMin, 'b'))
	earlier.Close()

	d, err := OpenDir(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.SetKeptBudget(0) // kept_size=0
	if err := d.PersistKept("ns"); err != nil {
		t.Fatal(err)
	}
	if filed, _ := filepath.Glob(filepath.Join(path, "kept", "ns", "[^.]*")); len(filed) != 0 {
		t.Errorf("copies an earlier mount filed are still there with kept_size=0: %v", filed)
	}
	d.Keep("a", keptFile(t, d, "a", "ea", KeepMin, 'a'))
	if files, _ := d.Kept(); files != 0 {
		t.Error("a file was kept with kept_size=0")
	}
	if n := d.Open(); n != 0 {
		t.Errorf("%d staging files open", n)
	}
}

// Keepable, which write-back mode asks before it stages an object from its
// end, says what Keep then does with the file read in whole.
func TestKeepableIsWhatKeepKeeps(t *testing.T) {
	for _, budget := range []int64{-1, 0, 2 * KeepMin} {
		d, err := OpenDir(t.TempDir(), 0)
		if err != nil {
			t.Fatal(err)
		}
		d.SetKeptBudget(budget)
		for _, size := range []int{KeepMin - 1, KeepMin, 2 * KeepMin, 2*KeepMin + 1} {
			key := fmt.Sprintf("%d-%d", budget, size)
			want := d.Keepable(int64(size))
			d.Keep(key, keptFile(t, d, key, "e", size, 'a'))
			if got := d.LookKept(key).Staging != nil; got != want {
				t.Errorf("kept_size %d, %d bytes: kept %v, Keepable said %v", budget, size, got, want)
			}
			d.DropKept(key)
		}
		if !d.Keepable(2*KeepMin) && budget != 0 {
			t.Errorf("kept_size %d: a file of twice the smallest kept is not keepable", budget)
		}
		d.Close()
	}
}

func TestKeptCopiesOutliveTheMount(t *testing.T) {
	path := privateDir(t)
	d, err := OpenDir(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.PersistKept("ns"); err != nil {
		t.Fatal(err)
	}
	d.Keep("a", keptFile(t, d, "a", "ea", KeepMin, 'a'))
	d.Keep("b", keptFile(t, d, "b", "eb", KeepMin+5, 'b'))
	d.Keep("torn", keptFile(t, d, "torn", "et", KeepMin, 't'))
	d.Close()
	filed, _ := filepath.Glob(filepath.Join(path, "kept", "ns", "[^.]*"))
	if len(filed) != 3 {
		t.Fatalf("filed %v, want three copies", filed)
	}
	for _, f := range filed {
		if raw, _ := readXattrNamed(f, keptXattr); strings.Contains(string(raw), `"torn"`) {
			os.Truncate(f, KeepMin-1) // not the size its record says
		}
	}

	next, err := OpenDir(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if err := next.PersistKept("ns"); err != nil {
		t.Fatal(err)
	}
	if files, bytes := next.Kept(); files != 2 || bytes != 2*KeepMin+5 {
		t.Fatalf("the next mount keeps %d files of %d bytes, want a and b", files, bytes)
	}
	// Another mount of the namespace meanwhile keeps none of them.
	other, _ := OpenDir(path, 0)
	if err := other.PersistKept("ns"); err != nil {
		t.Fatal(err)
	}
	if files, _ := other.Kept(); files != 0 {
		t.Errorf("a second mount took %d copies the first holds", files)
	}
	other.Close()

	c := next.TakeKept("b")
	if c.Staging == nil || !c.Unchecked || c.ETag != "eb" || c.Size != KeepMin+5 {
		t.Fatalf("took %+v, want b's copy, unchecked", c)
	}
	if sum, err := c.CRC64(); err != nil || sum != crc64.Checksum(bytes.Repeat([]byte{'b'}, KeepMin+5)) {
		t.Errorf("the copy's CRC-64: %v", err)
	}
	c.Remove()
	if n := next.Open(); n != 1 {
		t.Errorf("%d staging files open, want a's", n)
	}
}

// A mount allowed fewer descriptors than the one that filed its copies
// opens only the copies it takes, the newest: it opened every filed copy
// before choosing, and under a low descriptor limit lost the newest to
// EMFILE (deleted as unreadable) and kept whichever it opened first.
func TestFiledCopiesTakenUnderALowDescriptorLimit(t *testing.T) {
	path := privateDir(t)
	earlier, _ := OpenDir(path, 0)
	if err := earlier.PersistKept("ns"); err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		key := fmt.Sprintf("k%02d", i)
		earlier.Keep(key, keptFile(t, earlier, key, "e"+key, KeepMin, 'a'+byte(i)))
	}
	earlier.Close()

	next, err := OpenDir(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	next.maxOpen = 16 // two kept files at most (an eighth)
	// The namespace's lock, two copies, and the listing of the other
	// namespaces after them (dropStaleFiled).
	limitDescriptors(t, 4)
	if err := next.PersistKept("ns"); err != nil {
		t.Fatal(err)
	}
	if files, _ := next.Kept(); files != 2 {
		t.Fatalf("the next mount keeps %d files, want 2", files)
	}
	for _, key := range []string{"k11", "k10"} {
		if c := next.LookKept(key); c.Staging == nil {
			t.Errorf("the newest copy %s is not kept", key)
		}
	}
}

// Filed copies older than keptMaxAge go, whichever bucket they are of,
// unless a mount holds them.
func TestFiledCopiesExpire(t *testing.T) {
	path := privateDir(t)
	file := func(ns string) {
		d, _ := OpenDir(path, 0)
		d.PersistKept(ns)
		d.Keep("k", keptFile(t, d, "k", "e", KeepMin, 'k'))
		d.Close()
	}
	filed := func(ns string) int {
		names, _ := filepath.Glob(filepath.Join(path, "kept", ns, "[^.]*"))
		return len(names)
	}
	file("gone")
	file("held")
	file("mine")
	holder, _ := OpenDir(path, 0)
	holder.PersistKept("held") // a mount of that bucket runs
	defer holder.Close()

	defer func(age time.Duration) { keptMaxAge = age }(keptMaxAge)
	keptMaxAge = -time.Second // everything filed is too old now
	d, _ := OpenDir(path, 0)
	if err := d.PersistKept("mine"); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if files, _ := d.Kept(); files != 0 || filed("mine") != 0 {
		t.Errorf("a mount took %d expired copies of its own bucket (%d still filed)", files, filed("mine"))
	}
	if n := filed("gone"); n != 0 {
		t.Errorf("%d expired copies of a bucket no mount holds are still filed", n)
	}
	if files, _ := holder.Kept(); files != 1 || filed("held") != 1 {
		t.Errorf("the mount holding a bucket's copies keeps %d, %d filed, want 1", files, filed("held"))
	}
}

// At the bound on open staging files, a new one takes the place of a kept
// copy instead of waiting.
func TestKeptFilesGoAtTheBoundOnStagingFiles(t *testing.T) {
	d, err := OpenDir(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.maxOpen = 16 // two kept files at most (an eighth)
	d.Keep("a", keptFile(t, d, "a", "ea", KeepMin, 'a'))
	d.Keep("b", keptFile(t, d, "b", "eb", KeepMin, 'b'))
	var open []*Staging
	for d.Open() < d.maxOpen {
		s, err := d.NewStaging()
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, s)
	}
	d.SetEvictable(func() bool { return true }) // uploads "under way": a writer would wait for them
	done := make(chan *Staging)
	go func() {
		s, _ := d.NewStaging()
		done <- s
	}()
	select {
	case s := <-done:
		open = append(open, s)
	case <-time.After(10 * time.Second):
		t.Fatal("a new staging file waited with kept copies in the way")
	}
	if files, _ := d.Kept(); files != 1 {
		t.Errorf("%d files kept, want 1: the oldest made room", files)
	}
	for _, s := range open {
		s.Remove()
	}
}
