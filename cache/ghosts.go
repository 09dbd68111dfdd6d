package cache

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Ghosts: journal records removed after their upload without an fsync.
//
// Removing a record durably costs an fsync per upload — a disk cache
// flush, on the same disk as every close's own fsync. So the record of a
// summed file (Record.Sum) goes without one, and a crash may bring it back.
// Such a ghost is harmless while two things hold:
//   - its file holds other bytes once reused, and the next mount drops a
//     record whose file no longer matches its sum (OpenNamed, ErrGhost);
//   - the object still holds the ghost's bytes, so that uploading them
//     again changes nothing. Anything that is about to change the key —
//     a newer version's close, a rename, an unlink, a metadata copy —
//     first makes the key's ghosts durably gone (Journal.Settle).
//
// A staging file is deleted only after its ghost is durably gone too: its
// unlink is not durable either.

// maxSummed bounds the files whose records get a sum (and may become
// ghosts): reading a file back at its close to sum it is cheap only while
// it is small. Larger ones keep the fsync when their record goes.
const maxSummed = maxKeptExtent

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sumBufs are checksum's buffers: a new one for every close of a small
// file in write-back mode was 40% of all the mount allocated in a copy of
// many small files.
var sumBufs = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// checksum is the CRC-32C of the first size bytes of f, in hex.
func checksum(f *os.File, size int64) (string, error) {
	buf := sumBufs.Get().(*[32 << 10]byte)
	defer sumBufs.Put(buf)
	h := crc32.New(castagnoli)
	n, err := io.CopyBuffer(h, io.NewSectionReader(f, 0, size), buf[:])
	if err == nil && n < size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%08x", h.Sum32()), nil
}

// ghostSet indexes the staging files whose record is a ghost, by file and
// by the key the record named. A file has at most one.
type ghostSet struct {
	byFile map[*os.File]ghost
	byKey  map[string]map[*os.File]struct{}
	noted  uint64 // ghosts noted so far: tells a ghost from a later one of the same file
}

// ghost is a record removed without an fsync: the key it named, and when
// it was noted.
type ghost struct {
	key string
	nth uint64
}

func (g *ghostSet) add(f *os.File, key string) {
	if g.byFile == nil {
		g.byFile, g.byKey = map[*os.File]ghost{}, map[string]map[*os.File]struct{}{}
	}
	g.forget(f)
	g.noted++
	g.byFile[f] = ghost{key: key, nth: g.noted}
	if g.byKey[key] == nil {
		g.byKey[key] = map[*os.File]struct{}{}
	}
	g.byKey[key][f] = struct{}{}
}

// forget drops f's entry and reports whether it had one.
func (g *ghostSet) forget(f *os.File) bool {
	gh, ok := g.byFile[f]
	if !ok {
		return false
	}
	delete(g.byFile, f)
	delete(g.byKey[gh.key], f)
	if len(g.byKey[gh.key]) == 0 {
		delete(g.byKey, gh.key)
	}
	return true
}

// haunt notes that f's record of key was removed without an fsync.
func (d *Dir) haunt(f *os.File, key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ghosts.add(f, key)
}

// laid notes that f was fsync'd with a new record: its ghost is gone.
func (d *Dir) laid(f *os.File) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ghosts.forget(f)
}

// isGhost reports whether f's removed record may still come back.
func (d *Dir) isGhost(f *os.File) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.ghosts.byFile[f]
	return ok
}

// Ghosts returns how many records are ghosts now.
func (j *Journal) Ghosts() int {
	j.files.mu.Lock()
	defer j.files.mu.Unlock()
	return len(j.files.ghosts.byFile)
}

// Settle makes the ghosts of key durably gone. Call it before anything
// changes key: a newer version's record, a rename, an unlink, a copy.
func (j *Journal) Settle(key string) error {
	d := j.files
	d.mu.Lock()
	found := make(map[*os.File]ghost, len(d.ghosts.byKey[key]))
	for f := range d.ghosts.byKey[key] {
		found[f] = d.ghosts.byFile[f]
	}
	d.mu.Unlock()
	for f, gh := range found {
		// A closed file was synced before it was closed (deleteIdle).
		if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
			return fmt.Errorf("journal: settling %s: %w", key, err)
		}
		// A ghost the file got after the sync above is still one.
		d.mu.Lock()
		if d.ghosts.byFile[f] == gh {
			d.ghosts.forget(f)
		}
		d.mu.Unlock()
	}
	return nil
}

// deleteIdle closes and deletes an idle staging file, its ghost durably
// gone first.
func (d *Dir) deleteIdle(i idleFile) {
	if d.isGhost(i.f) {
		unix.Fsync(int(i.f.Fd()))
		d.laid(i.f)
	}
	i.delete()
}
