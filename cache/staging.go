// Package cache owns the local disk side of ossmount: the cache directory
// (0700) and its space limit, the staging files (0600) that hold what
// programs write until it is uploaded, the listing cache, and the
// write-back journal.
//
// In the default (synchronous) mode a staging file is unlinked as soon as
// it is created: it lives exactly as long as its descriptor, so none can
// outlive the process. In write-back mode staging files are named, under
// DIR/NAMESPACE/staged/, because an acknowledged close must survive a
// crash; the journal (journal.go) says which of them still need uploading.
//
// Emptied staging files are kept open for reuse (idle): creating a file
// allocates an inode, which on ext4 slows to a fraction of a millisecond
// once many files were deleted recently, and a small one keeps its disk
// blocks, so that the fsync of its next use (write-back mode) overwrites
// blocks instead of allocating them (about half the cost). Bytes past the
// staged size of a reused file are stale and never read.
//
// Lock order: Staging.use, then Dir.mu. Multiparts.mu is apart: nothing
// else is locked under it, nor it under anything of this package.
package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Dir is a cache directory.
type Dir struct {
	path  string
	named string // directory of named staging files; "" in sync mode
	limit int64  // bytes staged at most; 0: no limit

	count atomic.Int64 // staging files in use
	// maxOpen bounds count (maxStaged, or half the descriptor limit).
	maxOpen int64
	log     *slog.Logger // nil: no log
	// waitLogged says a writer waited for room (takeSlot) once.
	waitLogged bool // GUARDED_BY(mu)

	// reflinks: the file system can share blocks between files, and
	// CopyTo copies so (copyrange_linux.go).
	reflinks bool

	// reuseNamed says a named staging file may be emptied and reused: its
	// journal record is an attribute of the file itself, removed with it.
	reuseNamed bool

	mu   sync.Mutex
	cond *sync.Cond
	// wakes counts cond's broadcasts: a writer that lets go of mu to ask
	// the queue sees whether space was freed meanwhile (wakeLocked).
	wakes uint64 // GUARDED_BY(mu)
	used  int64  // GUARDED_BY(mu); bytes in staging files (not holes: holes.go)
	// uploaded: bytes of used that the bucket has too (Staging.MarkUploaded);
	// they go when their files' last handles are released.
	uploaded int64 // GUARDED_BY(mu)
	// minFree is the disk space writers leave free; 0: no bound.
	minFree int64 // GUARDED_BY(mu)
	// evictable hurries uploads along and reports whether they will free
	// space (nil: nothing will).
	evictable func() bool // GUARDED_BY(mu)
	idle      []idleFile  // GUARDED_BY(mu); emptied staging files
	idleCap   int         // most idle files: maxIdle, or less under a low descriptor limit
	idleBytes int64       // GUARDED_BY(mu); stale bytes the idle files keep
	// reused are staging files in use that came from idle with kept
	// blocks: their stale bytes can be freed when the disk is full.
	reused map[*Staging]struct{} // GUARDED_BY(mu)
	ghosts ghostSet              // GUARDED_BY(mu); see ghosts.go
	// streaming are the staging files of streamed uploads (streamed.go).
	streaming map[*Staging]*sending // GUARDED_BY(mu)
	keep      keptSet               // GUARDED_BY(mu); see kept.go
	keepMin   int64                 // the smallest file kept
	// keptBudget bounds the bytes kept; -1: the default (kept.go).
	keptBudget int64
	// keptDir files kept copies across mounts, under keptLock
	// (keptdisk.go); "": they go at Close.
	keptDir  string
	keptLock *os.File
	// sparesMaking is the size of the batch of spares being made
	// (spares.go), room the idle pool holds for it; spares counts the
	// batches running, which Close waits for.
	sparesMaking int  // GUARDED_BY(mu)
	closed       bool // GUARDED_BY(mu)
	spares       sync.WaitGroup
}

// OpenDir creates path (and parents) if needed and keeps the cache in a
// directory only its owner can enter: path itself, or one of its own below
// it (OwnRoot). limit bounds the bytes staged (0: no bound).
func OpenDir(path string, limit int64) (*Dir, error) {
	path, err := OwnRoot(path)
	if err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	d := &Dir{path: path, limit: limit, idleCap: maxIdle, maxOpen: maxStaged, keepMin: KeepMin, keptBudget: -1, reused: map[*Staging]struct{}{}}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		// Half the descriptors for staging files, an eighth for idle
		// ones, the rest for connections (a worker's each), /dev/fuse and
		// logs.
		d.idleCap = int(min(uint64(maxIdle), rl.Cur/8))
		d.maxOpen = int64(min(maxStaged, max(rl.Cur/2, 8)))
	}
	d.cond = sync.NewCond(&d.mu)
	d.reflinks = reflinks(path)
	return d, nil
}

// OwnRoot returns the directory the cache lives in under the configured
// path: path itself when it is new, or already private (0700) and the
// user's; else a subdirectory ossmount-UID of its own. A shared directory
// — ossfs's documented use_cache=/tmp — was made 0700, locking every other
// user and program out of /tmp.
func OwnRoot(path string) (string, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return path, ensurePrivateDir(path)
	}
	if err != nil {
		return "", err
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s is not a directory", path)
	}
	uid := os.Geteuid()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid && fi.Mode().Perm() == 0o700 {
		return path, nil
	}
	own := filepath.Join(path, fmt.Sprintf("ossmount-%d", uid))
	if err := os.Mkdir(own, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	// Not one another user made first (a symbolic link, or a directory
	// of theirs) in a directory anyone may write to.
	fi, err = os.Lstat(own)
	if err != nil {
		return "", err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || !fi.IsDir() || int(st.Uid) != uid {
		return "", fmt.Errorf("%s is not a directory of this user's", own)
	}
	return own, ensurePrivateDir(own)
}

func ensurePrivateDir(path string) error {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", path)
	}
	if fi.Mode().Perm() != 0o700 {
		return os.Chmod(path, 0o700)
	}
	return nil
}

// DefaultPath is the cache directory when none is configured:
// $XDG_CACHE_HOME/ossmount, ~/.cache/ossmount, or /var/cache/ossmount for
// root.
func DefaultPath() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "ossmount")
	}
	if os.Geteuid() == 0 {
		return "/var/cache/ossmount"
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".cache", "ossmount")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("ossmount-%d", os.Getuid()))
}

// Path is the directory's path.
func (d *Dir) Path() string { return d.path }

// Open returns how many staging files are open.
func (d *Dir) Open() int64 { return d.count.Load() }

// Used returns the bytes held by staging files.
func (d *Dir) Used() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.used
}

// SetEvictable tells the space limit how to know whether waiting can help:
// fn makes queued uploads start now and reports whether any are under way
// that will free staged space. It must not call back into the Dir.
func (d *Dir) SetEvictable(fn func() bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.evictable = fn
}

// Freed wakes writers waiting for space (call after uploads finish).
func (d *Dir) Freed() {
	d.mu.Lock()
	d.wakeLocked()
	d.mu.Unlock()
}

// wakeLocked wakes writers waiting for space or a slot. LOCKS_REQUIRED(d.mu)
func (d *Dir) wakeLocked() {
	d.wakes++
	d.cond.Broadcast()
}

// ErrNoSpace is returned when the cache is full and nothing can be evicted.
var ErrNoSpace = fmt.Errorf("cache directory full: %w", syscall.ENOSPC)

// releaseGrace is how long a writer short of space waits for files whose
// content is uploaded to let go of their staged bytes. The kernel sends a
// file's release after its close has returned, so the next file's first
// write (cp, tar) may come first.
var releaseGrace = time.Second

// reserve accounts n more staged bytes, waiting while the bounds would be
// broken and uploads, or the release of uploaded files, will free space.
func (d *Dir) reserve(n int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var deadline time.Time
	tailsCut := false
	for n > 0 && d.fullLocked(n) {
		if d.evictKeptLocked() {
			continue // kept copies go before anything is waited for
		}
		if d.minFree > 0 && (d.idleBytes > 0 || !tailsCut && len(d.reused) > 0) {
			// Blocks kept for reuse count against the free space: those
			// of idle files (an upload that ends may add some), and once
			// per call those past the size of reused files (a pass over
			// all of them).
			d.mu.Unlock()
			freed := d.dropIdleBlocks()
			if !tailsCut {
				tailsCut = true
				freed = d.cutReusedTails() || freed
			}
			d.mu.Lock()
			if freed {
				continue
			}
		}
		busy := false
		if evictable := d.evictable; evictable != nil {
			seen := d.wakes
			d.mu.Unlock()
			busy = evictable()
			d.mu.Lock()
			if d.wakes != seen || !d.fullLocked(n) {
				// Freed while unlocked, or an upload ended or a file was
				// let go: its blocks may be idle or kept now, and its
				// wake-up came before this writer waited.
				continue
			}
		}
		if !busy && len(d.streaming) > 0 {
			// Uploaded parts of files being written can leave
			// (streamed.go).
			d.mu.Unlock()
			dropped := d.dropSent()
			d.mu.Lock()
			if dropped || !d.fullLocked(n) {
				continue
			}
		}
		if !busy {
			if d.uploaded == 0 {
				return ErrNoSpace
			}
			if deadline.IsZero() {
				deadline = time.Now().Add(releaseGrace)
			}
			wait := time.Until(deadline)
			if wait <= 0 {
				return ErrNoSpace
			}
			wake := time.AfterFunc(wait, d.Freed)
			d.cond.Wait()
			wake.Stop()
			continue
		}
		d.cond.Wait()
	}
	d.used += n
	return nil
}

// fullLocked reports whether n more staged bytes would pass the limit on
// staged bytes or leave less than minFree free on the disk.
// LOCKS_REQUIRED(d.mu)
func (d *Dir) fullLocked(n int64) bool {
	if d.limit > 0 && d.used+n > d.limit {
		return true
	}
	if d.minFree > 0 {
		if _, free, err := d.DiskSpace(); err == nil {
			return free-n < d.minFree
		}
	}
	return false
}

// SetMinFree makes writers wait for uploads, or fail with ENOSPC, rather
// than leave less than n bytes free on the cache directory's disk (ossfs's
// ensure_diskfree). Blocks kept for reuse are freed first.
func (d *Dir) SetMinFree(n int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.minFree = n
}

// DefaultMinFree is the free space write-back staging leaves on the cache
// disk unless told otherwise: 5% of the disk, at most 1 GiB. A backlog
// behind a slow or failing link must not fill the disk the host runs on
// (by default /var/cache, on the root file system, for root).
func (d *Dir) DefaultMinFree() int64 {
	size, _, err := d.DiskSpace()
	if err != nil {
		return 0
	}
	return min(size/20, 1<<30)
}

// DiskSpace returns the size of the cache directory's disk and the space
// on it free to the mount (ext4 keeps some for root).
func (d *Dir) DiskSpace() (size, free int64, err error) { return statDisk(d.path) }

// statDisk is DiskSpace's statfs (tests give the disk a size).
var statDisk = func(path string) (size, free int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, 0, err
	}
	return int64(st.Blocks) * st.Bsize, int64(st.Bavail) * st.Bsize, nil
}

func (d *Dir) release(n int64) {
	if n == 0 {
		return
	}
	d.mu.Lock()
	d.used -= n
	d.wakeLocked()
	d.mu.Unlock()
}

// maxStaged bounds the staging files in use at once. Each holds a
// descriptor, and a write-back queue keeps one per file until it is
// uploaded: a copy far ahead of its uploads failed with EMFILE at the
// descriptor limit, and each queued file costs about 4 KiB of memory
// (10,000 queued: 37 MiB). Far more than the workers need to stay busy;
// beyond it writers wait for uploads, as at the cache size.
const maxStaged = 8192

// Staging is the local copy of one file's content. It is safe for
// concurrent use: reads and writes at different offsets go straight to the
// file (pread/pwrite).
type Staging struct {
	dir  *Dir
	name string // path of a named staging file; "" if unlinked
	// durable says the named file's directory entry is on disk.
	durable bool

	// use is held for writing while the file is handed on (Remove), so
	// that a late reader gets os.ErrClosed, never the next file's content.
	use sync.RWMutex
	f   *os.File // GUARDED_BY(use); nil once removed

	mu   sync.Mutex
	size int64 // GUARDED_BY(mu); staged bytes, accounted in dir.used
	// extent is how far the file's disk blocks reach; bytes from size to
	// extent are stale (a reused file's earlier content) or reserved
	// (Reserve).
	extent int64 // GUARDED_BY(mu)
	// uploaded is what MarkUploaded added to dir.uploaded (0: unmarked).
	uploaded int64 // GUARDED_BY(mu)
	// dropped: the bytes below left the disk, uploaded as parts
	// (streamed.go); they are not in used. Written under mu.
	dropped atomic.Int64
	// holes below size take no disk and are not in used (holes.go).
	holes spans // GUARDED_BY(mu)
	// absent says where the bytes below absentEnd are, if they are not
	// staged (absent.go); absentEnd is written under mu.
	absent    *absentStart // GUARDED_BY(mu)
	absentEnd atomic.Int64
	// src is the object the content was copied from (source.go); nil:
	// none, or nothing of it left unchanged.
	src *source // GUARDED_BY(mu)
	// follows is the staging file this one was copied from, and followers
	// the copies made of this one, until it becomes an object (source.go).
	follows   *follower  // GUARDED_BY(mu)
	followers []*Staging // GUARDED_BY(mu)
}

// heldLocked is the file's bytes in used. LOCKS_REQUIRED(s.mu)
func (s *Staging) heldLocked() int64 { return s.size - s.dropped.Load() - s.holes.total() }

// SetLogger gives the directory a log for what writers wait for; call it
// before the directory is used.
func (d *Dir) SetLogger(log *slog.Logger) { d.log = log }

// NewStaging creates an empty staging file: unlinked in sync mode, named in
// write-back mode. At the bound on open staging files it waits while
// uploads under way will close some.
func (d *Dir) NewStaging() (*Staging, error) {
	d.takeSlot()
	d.mu.Lock()
	if n := len(d.idle); n > 0 {
		i := d.idle[n-1]
		d.idle = d.idle[:n-1]
		d.idleBytes -= i.extent
		s := &Staging{dir: d, f: i.f, name: i.name, durable: i.durable, extent: i.extent}
		d.trackStaleLocked(s)
		d.makeSparesLocked()
		d.mu.Unlock()
		return s, nil
	}
	d.makeSparesLocked()
	d.mu.Unlock()
	if d.named != "" {
		f, err := os.OpenFile(filepath.Join(d.named, newID()), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			d.giveBackSlot()
			return nil, fmt.Errorf("staging file: %w", err)
		}
		return &Staging{dir: d, f: f, name: f.Name()}, nil
	}
	f, err := os.OpenFile(d.path, os.O_RDWR|oTmpfile, 0o600)
	if err != nil {
		// No O_TMPFILE on this file system: create, then unlink at once.
		f, err = os.CreateTemp(d.path, "staging-")
		if err != nil {
			d.giveBackSlot()
			return nil, fmt.Errorf("staging file: %w", err)
		}
		os.Remove(f.Name())
	}
	return &Staging{dir: d, f: f}, nil
}

// takeSlot counts a staging file about to be opened, waiting while the
// staging files in use are at their bound and uploads under way will end
// some (the evictable callback says so). A writer that nothing will free
// goes on past the bound, and the system's limit decides. The slot is
// taken before the file is opened, so that writers opening at once cannot
// all pass the bound.
func (d *Dir) takeSlot() {
	if d.tryTakeSlot() {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.awaitSlotLocked() {
		d.count.Add(1)
	}
}

// awaitSlotLocked waits for a free slot and takes it, while uploads under
// way will free one; it reports false, having taken none, when nothing
// will (the directory closed, no upload under way). LOCKS_REQUIRED(d.mu)
func (d *Dir) awaitSlotLocked() bool {
	waited := false
	for !d.tryTakeSlot() {
		if d.closed {
			return false
		}
		if d.evictKeptLocked() {
			continue
		}
		evictable := d.evictable
		if evictable == nil {
			return false
		}
		seen := d.wakes
		d.mu.Unlock()
		busy := evictable()
		d.mu.Lock()
		if d.wakes != seen {
			continue // a wake-up came before this writer waited
		}
		if !busy {
			return false
		}
		if !waited && d.log != nil {
			// Info once a mount: a user wondering why a copy slowed
			// down learns why.
			level := slog.LevelDebug
			if !d.waitLogged {
				d.waitLogged, level = true, slog.LevelInfo
			}
			d.log.Log(context.Background(), level, "staging files in use at their bound; writers wait for uploads",
				"open", d.count.Load(), "bound", d.maxOpen)
		}
		waited = true
		d.cond.Wait()
	}
	return true
}

// tryTakeSlot counts a staging file if the bound leaves room for it.
func (d *Dir) tryTakeSlot() bool {
	for {
		n := d.count.Load()
		if n >= d.maxOpen {
			return false
		}
		if d.count.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// giveBackSlot undoes takeSlot for a staging file that could not be opened.
func (d *Dir) giveBackSlot() {
	d.mu.Lock()
	d.count.Add(-1)
	d.wakeLocked()
	d.mu.Unlock()
}

// trackStaleLocked notes a staging file whose disk blocks run past its
// size, so that reclaim can free them. LOCKS_REQUIRED(d.mu)
func (d *Dir) trackStaleLocked(s *Staging) {
	if s.extent > s.size {
		d.reused[s] = struct{}{}
	}
}

// Name is the path of a named staging file ("" if unlinked).
func (s *Staging) Name() string { return s.name }

func (s *Staging) ReadAt(p []byte, off int64) (n int, err error) {
	err = s.withFile(func(f *os.File) error {
		if off < s.dropped.Load() {
			return ErrDropped
		}
		if off < s.absentEnd.Load() {
			return ErrAbsent
		}
		s.mu.Lock()
		size := s.size
		s.mu.Unlock()
		if off >= size {
			return io.EOF
		}
		short := int64(len(p)) > size-off
		if short {
			p = p[:size-off]
		}
		n, err = f.ReadAt(p, off)
		if err == nil && short {
			err = io.EOF
		}
		return err
	})
	return n, err
}

// withFile runs fn on the open file, or returns os.ErrClosed once the
// staging file was removed.
func (s *Staging) withFile(fn func(f *os.File) error) error {
	s.use.RLock()
	defer s.use.RUnlock()
	if s.f == nil {
		return os.ErrClosed
	}
	return fn(s.f)
}

// WriteAt writes to the staging file, first waiting for room under the
// cache limit.
func (s *Staging) WriteAt(p []byte, off int64) (n int, err error) {
	if off < s.dropped.Load() {
		return 0, ErrDropped
	}
	if off < s.absentEnd.Load() {
		return 0, ErrAbsent
	}
	s.unmark()
	end := off + int64(len(p))
	s.mu.Lock()
	s.changedLocked(off, end) // before: a failed write may have written some
	s.mu.Unlock()
	if err := s.cutStale(off, end); err != nil {
		return 0, err
	}
	return s.writeAccounted(p, off)
}

// writeAccounted writes p at off once the cache has room for it (account),
// and again once a full disk has given kept blocks back.
func (s *Staging) writeAccounted(p []byte, off int64) (n int, err error) {
	if err := s.account(off, off+int64(len(p))); err != nil {
		return 0, err
	}
	err = s.withFile(func(f *os.File) error {
		if off < s.dropped.Load() {
			return ErrDropped // dropped while it waited for room
		}
		n, err = f.WriteAt(p, off)
		return err
	})
	if errors.Is(err, syscall.ENOSPC) && s.dir.reclaim() {
		// The disk is full, but kept blocks were freed: try the rest again.
		var more int
		err = s.withFile(func(f *os.File) error {
			more, err = f.WriteAt(p[n:], off+int64(n))
			return err
		})
		n += more
	}
	return n, err
}

// cutStale prepares a write of [off, end): bytes between the staged size
// and off must read as zeros, so stale bytes there are cut off first.
func (s *Staging) cutStale(off, end int64) error {
	return s.withFile(func(f *os.File) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if off > s.size && s.extent > s.size {
			if err := f.Truncate(s.size); err != nil {
				return err
			}
			s.extent = s.size
		}
		s.extent = max(s.extent, end)
		return nil
	})
}

// Truncate sets the staged size. Growing, the new bytes read as zeros:
// stale bytes a reused file keeps past the staged size are cut off first.
func (s *Staging) Truncate(size int64) error {
	if d := s.dropped.Load(); size < d && size != 0 {
		return ErrDropped
	}
	if size < s.absentEnd.Load() && size != 0 {
		return ErrAbsent
	}
	s.unmark()
	s.mu.Lock()
	s.changedLocked(size, math.MaxInt64)
	s.mu.Unlock()
	if err := s.cutStale(size, size); err != nil {
		return err
	}
	var dropped int64
	err := s.withFile(func(f *os.File) error {
		if err := f.Truncate(size); err != nil {
			return err
		}
		if size == 0 { // emptied: nothing dropped is left, or to drop
			s.mu.Lock()
			dropped = s.dropped.Swap(0)
			s.clearAbsentLocked()
			s.mu.Unlock()
			s.StreamEnded()
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.extent = size
	var shrink int64
	if size < s.size {
		// Dropped bytes and holes are not in used.
		shrink = s.size - size - dropped - s.holes.in(size, s.size)
		s.holes = s.holes.cut(size, s.size)
	} else {
		s.holes = s.holes.add(s.size, size) // growing takes no disk
	}
	s.size = size
	s.mu.Unlock()
	if shrink > 0 {
		s.dir.release(shrink)
	}
	return nil
}

// Reserve allocates cache disk for [off, off+length) of the staging file
// without changing the staged size (fallocate(2) with KEEP_SIZE), so that
// writes there later do not run out of disk. Blocks past the size count in
// the extent: an idle file and a full disk give them back.
func (s *Staging) Reserve(off, length int64) error {
	// Blocks in holes below the size are staged bytes, as if written.
	s.mu.Lock()
	within := min(off+length, s.size)
	s.mu.Unlock()
	if within > off {
		if err := s.account(off, within); err != nil {
			return err
		}
	}
	reserve := func(f *os.File) error {
		if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, off, length); err != nil {
			return err
		}
		s.mu.Lock()
		s.extent = max(s.extent, off+length)
		past := s.extent > s.size
		s.mu.Unlock()
		if past { // reclaimable (reclaim), as a reused file's stale bytes
			s.dir.mu.Lock()
			s.dir.reused[s] = struct{}{}
			s.dir.mu.Unlock()
		}
		return nil
	}
	err := s.withFile(reserve)
	if errors.Is(err, syscall.ENOSPC) && s.dir.reclaim() {
		err = s.withFile(reserve)
	}
	return err
}

// account reserves room for a write of [off, end) — the bytes past the
// end and the holes it fills — and records it; a gap it leaves past the
// end is a hole.
func (s *Staging) account(off, end int64) error {
	s.mu.Lock()
	want := s.takesLocked(off, end)
	s.mu.Unlock()
	if want > 0 {
		if err := s.dir.reserve(want); err != nil {
			return err
		}
	}
	// The size may have changed while waiting (another writer grew it, a
	// truncate shrank it): account what the write really takes.
	s.mu.Lock()
	actual := s.takesLocked(off, end)
	s.holes = s.holes.cut(off, min(end, s.size)).add(s.size, off)
	s.size = max(s.size, end)
	s.mu.Unlock()
	s.dir.release(want - actual) // negative: adds the difference
	return nil
}

// takesLocked is what a write of [off, end) adds to used: the holes it
// fills and the bytes past the end. LOCKS_REQUIRED(s.mu)
func (s *Staging) takesLocked(off, end int64) int64 {
	return s.holes.in(off, min(end, s.size)) + max(0, end-max(off, s.size))
}

// Sync flushes the staged content (and size) to the disk.
func (s *Staging) Sync() error {
	return s.withFile(func(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) })
}

// DropCached writes [off, off+size) of the staged content to disk and
// lets its pages go from memory. A streamed upload calls it for each part
// it has sent: the next parts then reuse those pages instead of the whole
// file taking fresh memory (costly on a VM that hands free memory back to
// its host), and dirty pages stay too few to throttle the writer. Pages
// whose writeback failed are kept. Once the file is removed it does nothing.
func (s *Staging) DropCached(off, size int64) error {
	err := s.withFile(func(f *os.File) error {
		fd := int(f.Fd())
		err := unix.SyncFileRange(fd, off, size, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
		if err != nil {
			return err
		}
		return unix.Fadvise(fd, off, size, unix.FADV_DONTNEED)
	})
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

// CopyTo returns a new staging file with the same content (copy on write
// of a file whose staged content belongs to a queued upload).
func (s *Staging) CopyTo(d *Dir) (*Staging, error) {
	if s.dropped.Load() > 0 {
		return nil, ErrDropped
	}
	if s.absentEnd.Load() > 0 {
		return nil, ErrAbsent
	}
	c, err := d.NewStaging()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	size, src, seen := s.size, s.copySourceLocked(), s.src
	s.mu.Unlock()
	if err := c.account(0, size); err != nil { // room for all of it first
		c.Remove()
		return nil, err
	}
	err = s.withFile(func(f *os.File) error {
		if !d.reflinks {
			_, err := io.Copy(io.NewOffsetWriter(c, 0), io.NewSectionReader(f, 0, size))
			return err
		}
		return c.withFile(func(cf *os.File) error {
			err := copyRange(cf, f, size)
			if errors.Is(err, syscall.ENOSPC) && d.reclaim() {
				err = copyRange(cf, f, size) // kept blocks were freed
			}
			return err
		})
	})
	if err != nil {
		c.Remove()
		return nil, err
	}
	c.mu.Lock()
	c.src = src // the copy wrote every byte: as unchanged as the original's
	c.mu.Unlock()
	c.follow(s, seen)
	return c, nil
}

// Remove ends the staging file: its content (and journal record) is
// dropped and its space released. The file itself is emptied and kept for
// reuse, or closed and deleted.
func (s *Staging) Remove() {
	if i, ok := s.detach(); ok {
		s.dir.dispose(i)
		s.dir.unaccount(s)
	}
}

// detach ends the staging file's use: later readers get os.ErrClosed, and
// its content is the caller's (dispose, or persistKept). The caller then
// calls unaccount.
func (s *Staging) detach() (i idleFile, ok bool) {
	s.use.Lock()
	f := s.f
	s.f = nil
	s.use.Unlock()
	if f == nil {
		return idleFile{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return idleFile{f: f, name: s.name, durable: s.durable, extent: s.extent}, true
}

// unaccount gives back a detached staging file's bytes and its slot, once
// its descriptor is closed or idle: a slot given back while dispose still
// held the descriptor (an fsync long) let a new file open past the bound,
// and a mount replaying its journal under a low descriptor limit ran out
// of descriptors.
func (d *Dir) unaccount(s *Staging) {
	s.mu.Lock()
	n, uploaded := s.heldLocked(), s.uploaded
	s.size, s.uploaded, s.holes, s.src = 0, 0, nil, nil
	s.follows, s.followers = nil, nil
	s.clearAbsentLocked()
	s.mu.Unlock()
	// The uploaded mark and the bytes go at once: a writer short of room
	// that saw the mark gone but not the bytes would give up (reserve).
	d.mu.Lock()
	delete(d.reused, s)
	delete(d.streaming, s)
	d.uploaded -= uploaded
	d.used -= n
	d.count.Add(-1)
	d.wakeLocked() // room for writers (reserve, takeSlot)
	d.mu.Unlock()
}

// MarkUploaded notes that the bucket has the staged content, so that a
// writer short of space waits a moment for the file's release instead of
// failing at once. Any change to the file takes the mark away.
func (s *Staging) MarkUploaded() {
	s.mu.Lock()
	held := s.heldLocked()
	n := held - s.uploaded
	s.uploaded = held
	s.mu.Unlock()
	s.dir.mu.Lock()
	s.dir.uploaded += n
	s.dir.mu.Unlock()
}

func (s *Staging) unmark() {
	s.mu.Lock()
	n := s.uploaded
	s.uploaded = 0
	s.mu.Unlock()
	if n != 0 {
		s.dir.mu.Lock()
		s.dir.uploaded -= n
		s.dir.mu.Unlock()
	}
}

// NewRecordID returns a new unique write-back record id.
func NewRecordID() string { return newID() }

func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
