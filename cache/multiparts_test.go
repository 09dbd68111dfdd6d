package cache

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func openLedger(t *testing.T, dir string) *Multiparts {
	t.Helper()
	m, err := OpenMultiparts(dir, "ns", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// die ends a ledger's mount as a crash would: the lock goes, the file stays.
func (m *Multiparts) die() { m.f.Close() }

func ledgerFiles(t *testing.T, m *Multiparts) []string {
	t.Helper()
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestLedgerOfACleanMountIsRemoved(t *testing.T) {
	dir := t.TempDir()
	m := openLedger(t, dir)
	if files := ledgerFiles(t, m); len(files) != 0 {
		t.Fatalf("a ledger before any upload: %v", files)
	}
	m.Started("a", "id-a")
	fi, err := os.Stat(m.dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("ledger directory: %v %v", fi.Mode(), err)
	}
	files := ledgerFiles(t, m)
	if len(files) != 1 {
		t.Fatalf("ledger files: %v", files)
	}
	if fi, err := os.Stat(filepath.Join(m.dir, files[0])); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ledger file: %v %v", fi.Mode(), err)
	}
	m.Ended("id-a")
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if files := ledgerFiles(t, m); len(files) != 0 {
		t.Fatalf("left after a clean close: %v", files)
	}
}

func TestOrphansAreTheOpenUploadsOfDeadLedgers(t *testing.T) {
	dir := t.TempDir()
	dead, alive, next := openLedger(t, dir), openLedger(t, dir), openLedger(t, dir)
	dead.Started("a", "id-a")
	dead.Started("b", "id-b")
	dead.Started("c\nwith a newline", "id-c")
	dead.Ended("id-b")
	alive.Started("d", "id-d")
	// A crash in the middle of writing a line.
	if _, err := dead.f.WriteString(`{"key":"e","i`); err != nil {
		t.Fatal(err)
	}
	dead.die()

	o, err := next.Orphans()
	if err != nil {
		t.Fatal(err)
	}
	want := []Upload{{Key: "a", ID: "id-a"}, {Key: "c\nwith a newline", ID: "id-c"}}
	if !slices.Equal(o.Uploads, want) {
		t.Fatalf("orphans %v, want %v", o.Uploads, want)
	}
	// A second look, while the first holds the dead ledger, finds none.
	if o2, err := openLedger(t, dir).Orphans(); err != nil || len(o2.Uploads) != 0 {
		t.Fatalf("orphans taken twice: %v %v", o2.Uploads, err)
	}
	// The abort of c failed: it moves to next's ledger.
	next.Settle(o, want[1:])
	if files := ledgerFiles(t, next); len(files) != 2 { // alive's and next's
		t.Fatalf("ledger files after settling: %v", files)
	}
	if err := next.Close(); err != nil { // keeps its ledger: c is open
		t.Fatal(err)
	}
	if o, err := openLedger(t, dir).Orphans(); err != nil || !slices.Equal(o.Uploads, want[1:]) {
		t.Fatalf("orphans after a failed abort: %v %v, want %v", o.Uploads, err, want[1:])
	}
	alive.Ended("id-d")
	alive.Close()
}

// A ledger a mount died making (still hidden) is removed once it is old.
func TestHalfMadeLedgerIsRemovedWhenOld(t *testing.T) {
	dir := t.TempDir()
	m := openLedger(t, dir)
	young, old := filepath.Join(m.dir, ".1-young"), filepath.Join(m.dir, ".1-old")
	for _, p := range []string{young, old} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	long := mustParseTime(t, "2026-01-01T00:00:00Z")
	if err := os.Chtimes(old, long, long); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Orphans(); err != nil {
		t.Fatal(err)
	}
	if files := ledgerFiles(t, m); !slices.Equal(files, []string{".1-young"}) {
		t.Fatalf("files %v, want the young one only", files)
	}
}

// A ledger has no name until it is locked: a mount killed while making it
// left an unlocked hidden file that the next mount kept for a minute, and
// a crash test found it in the cache directory after the next mount.
func TestLedgerHasNoNameUntilLocked(t *testing.T) {
	dir := t.TempDir()
	m := openLedger(t, dir)
	var seen []string
	ledgerMade = func(string) { seen = ledgerFiles(t, m) }
	defer func() { ledgerMade = func(string) {} }()
	m.Started("k", "1")
	if len(seen) != 0 {
		t.Fatalf("the ledger had a name before it was locked: %v", seen)
	}
	if files := ledgerFiles(t, m); len(files) != 1 || strings.HasPrefix(files[0], ".") {
		t.Fatalf("ledger files %v, want one in view", files)
	}
	other := openLedger(t, dir)
	if o, err := other.Orphans(); err != nil || len(o.Uploads) != 0 {
		t.Fatalf("another mount took a live ledger: %v, %v", o, err)
	}
}

// A mount that uploads for months keeps a small ledger.
func TestLedgerStaysSmall(t *testing.T) {
	dir := t.TempDir()
	m := openLedger(t, dir)
	for i := range 2000 {
		id := fmt.Sprintf("upload-%06d", i)
		m.Started("some/long/key/of/a/big/file", id)
		m.Ended(id)
	}
	fi, err := m.f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > ledgerCompactAt {
		t.Fatalf("ledger of %d bytes", fi.Size())
	}
	m.Started("k", "last")
	m.die()
	if o, err := openLedger(t, dir).Orphans(); err != nil || !slices.Equal(o.Uploads, []Upload{{Key: "k", ID: "last"}}) {
		t.Fatalf("orphans after compaction: %v %v", o.Uploads, err)
	}
}

func mustParseTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}
