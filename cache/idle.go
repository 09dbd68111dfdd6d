package cache

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/ossmount/ossmount/internal/fsutil"
)

// The idle pool: emptied staging files kept for the next file (see the
// package comment for why), and what frees their blocks when the disk is
// full.

// idleFile is an emptied staging file kept for reuse.
type idleFile struct {
	f       *os.File
	name    string
	durable bool
	extent  int64 // stale bytes kept (their disk blocks)
}

const (
	// maxIdle bounds the emptied staging files kept for reuse (and their
	// descriptors; at most an eighth of the descriptor limit). Write-back
	// uploads can trail the writer by hundreds of files; deleting what does
	// not fit would make inode allocation slow.
	maxIdle = 1024
	// maxKeptExtent bounds the stale bytes one idle file keeps, and
	// maxIdleBytes all of them; beyond, a file is truncated when idle.
	maxKeptExtent = 1 << 20
	maxIdleBytes  = 64 << 20
)

// reclaim frees the disk blocks kept for reuse — by idle staging files and
// past the size of reused ones — and kept copies once the disk is full, and
// reports whether there were any.
func (d *Dir) reclaim() bool {
	keptFreed := d.dropAllKept()
	idleFreed := d.dropIdleBlocks()
	tailsFreed := d.cutReusedTails()
	return d.dropSent() || idleFreed || tailsFreed || keptFreed
}

// dropIdleBlocks frees the blocks idle staging files keep; it reports
// whether there were any.
func (d *Dir) dropIdleBlocks() bool {
	d.mu.Lock()
	idle := d.idle
	d.idle, d.idleBytes = nil, 0
	d.mu.Unlock()
	freed := false
	kept := idle[:0]
	for _, i := range idle {
		if i.extent > 0 {
			if !i.dropBlocks() {
				d.deleteIdle(i)
				continue
			}
			freed = true
		}
		kept = append(kept, i)
	}
	d.mu.Lock()
	d.idle = append(d.idle, kept...)
	d.mu.Unlock()
	return freed
}

// cutReusedTails frees the blocks past the staged size of reused staging
// files; it reports whether there were any.
func (d *Dir) cutReusedTails() bool {
	d.mu.Lock()
	reused := make([]*Staging, 0, len(d.reused))
	for s := range d.reused {
		reused = append(reused, s)
	}
	d.mu.Unlock()
	freed := false
	for _, s := range reused {
		if s.cutTail() {
			freed = true
		}
	}
	return freed
}

// cutTail frees the stale bytes past the staged size; it reports whether
// there were any.
func (s *Staging) cutTail() bool {
	cut := false
	s.withFile(func(f *os.File) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.extent > s.size && f.Truncate(s.size) == nil {
			s.extent, cut = s.size, true
		}
		return nil
	})
	return cut
}

// idleRoomLocked is how many more files the idle pool may take: spares
// being made count, since each holds a descriptor already.
// LOCKS_REQUIRED(d.mu)
func (d *Dir) idleRoomLocked() int { return d.idleCap - len(d.idle) - d.sparesMaking }

// dispose empties a staging file into the idle list, or deletes it.
func (d *Dir) dispose(i idleFile) {
	reusable := true
	if i.name != "" {
		// A ghost's record is gone already, and its sum guards the reuse
		// (ghosts.go). Any other record goes durably, even from a file about
		// to be deleted: an unlink that a crash undoes must not bring back
		// a record that a newer version of the file has since replaced.
		reusable = d.reuseNamed && (d.isGhost(i.f) || dropRecord(i.f))
	}
	d.mu.Lock()
	room := reusable && d.idleRoomLocked() > 0
	keepBlocks := i.extent <= maxKeptExtent && d.idleBytes+i.extent <= maxIdleBytes
	d.mu.Unlock()
	if room && !keepBlocks {
		room = i.dropBlocks()
	}
	if room {
		d.mu.Lock()
		if d.idleRoomLocked() > 0 {
			d.idle = append(d.idle, i)
			d.idleBytes += i.extent
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
	}
	d.deleteIdle(i)
}

// dropBlocks frees the file's stale bytes; it reports whether it could.
func (i *idleFile) dropBlocks() bool {
	if i.extent > 0 {
		if i.f.Truncate(0) != nil {
			return false
		}
		i.extent = 0
	}
	return true
}

// delete closes the file and removes a named one.
func (i idleFile) delete() {
	i.f.Close()
	if i.name != "" {
		os.Remove(i.name) // a missing file is already what we want
	}
}

// dropRecord removes a named staging file's journal record, durably, so
// that no crash can pair it with another file's content in the same
// blocks. It runs after an upload, not in a close.
func dropRecord(f *os.File) bool {
	return removeXattrRecord(f) == nil && unix.Fsync(int(f.Fd())) == nil
}

// Close deletes the idle staging files (at unmount); no ghost outlives it.
func (d *Dir) Close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	if d.keptDir != "" {
		d.persistKept()
	} else {
		d.dropAllKept()
	}
	d.spares.Wait()
	d.mu.Lock()
	idle := d.idle
	d.idle, d.idleBytes = nil, 0
	d.mu.Unlock()
	ghosts := false
	for _, i := range idle {
		if d.isGhost(i.f) {
			ghosts = true
			d.laid(i.f)
		}
		i.delete()
	}
	if ghosts {
		// One sync of the directory makes all those unlinks durable.
		fsutil.SyncDir(d.named)
	}
	d.mu.Lock()
	rest := make([]*os.File, 0, len(d.ghosts.byFile))
	for f := range d.ghosts.byFile {
		rest = append(rest, f)
	}
	d.ghosts = ghostSet{}
	d.mu.Unlock()
	for _, f := range rest {
		f.Sync()
	}
}
