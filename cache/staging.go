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
// Lock order: Dir.mu only.
package cache

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
)

// Dir is a cache directory.
type Dir struct {
	path  string
	named string // directory of named staging files; "" in sync mode
	limit int64  // bytes staged at most; 0: no limit

	count atomic.Int64 // staging files open

	mu   sync.Mutex
	cond *sync.Cond
	used int64 // GUARDED_BY(mu); bytes in staging files
	// evictable hurries uploads along and reports whether they will free
	// space (nil: nothing will).
	evictable func() bool // GUARDED_BY(mu)
}

// OpenDir creates path (and parents) if needed and makes sure it is a
// directory only its owner can enter. limit bounds the bytes staged (0: no
// bound).
func OpenDir(path string, limit int64) (*Dir, error) {
	if err := ensurePrivateDir(path); err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	d := &Dir{path: path, limit: limit}
	d.cond = sync.NewCond(&d.mu)
	return d, nil
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
	d.cond.Broadcast()
	d.mu.Unlock()
}

// ErrNoSpace is returned when the cache is full and nothing can be evicted.
var ErrNoSpace = fmt.Errorf("cache directory full: %w", syscall.ENOSPC)

// reserve accounts n more staged bytes, waiting while the limit is
// exceeded and uploads will free space.
func (d *Dir) reserve(n int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.limit > 0 && n > 0 && d.used+n > d.limit {
		evictable := d.evictable
		if evictable == nil {
			return ErrNoSpace
		}
		d.mu.Unlock()
		busy := evictable()
		d.mu.Lock()
		if !busy {
			return ErrNoSpace
		}
		if d.used+n <= d.limit {
			break // freed while unlocked
		}
		d.cond.Wait()
	}
	d.used += n
	return nil
}

func (d *Dir) release(n int64) {
	if n == 0 {
		return
	}
	d.mu.Lock()
	d.used -= n
	d.cond.Broadcast()
	d.mu.Unlock()
}

// Staging is the local copy of one file's content. It is safe for
// concurrent use: reads and writes at different offsets go straight to the
// file (pread/pwrite).
type Staging struct {
	dir    *Dir
	f      *os.File
	name   string // path of a named staging file; "" if unlinked
	closed atomic.Bool

	mu   sync.Mutex
	size int64 // GUARDED_BY(mu); bytes accounted in dir.used
}

// NewStaging creates an empty staging file: unlinked in sync mode, named in
// write-back mode.
func (d *Dir) NewStaging() (*Staging, error) {
	if d.named != "" {
		f, err := os.OpenFile(filepath.Join(d.named, newID()), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("staging file: %w", err)
		}
		d.count.Add(1)
		return &Staging{dir: d, f: f, name: f.Name()}, nil
	}
	f, err := os.OpenFile(d.path, os.O_RDWR|oTmpfile, 0o600)
	if err != nil {
		// No O_TMPFILE on this file system: create, then unlink at once.
		f, err = os.CreateTemp(d.path, "staging-")
		if err != nil {
			return nil, fmt.Errorf("staging file: %w", err)
		}
		os.Remove(f.Name())
	}
	d.count.Add(1)
	return &Staging{dir: d, f: f}, nil
}

// Name is the path of a named staging file ("" if unlinked).
func (s *Staging) Name() string { return s.name }

func (s *Staging) ReadAt(p []byte, off int64) (int, error) { return s.f.ReadAt(p, off) }

// WriteAt writes to the staging file, first waiting for room under the
// cache limit.
func (s *Staging) WriteAt(p []byte, off int64) (int, error) {
	if err := s.grow(off + int64(len(p))); err != nil {
		return 0, err
	}
	return s.f.WriteAt(p, off)
}

// Truncate sets the staged size.
func (s *Staging) Truncate(size int64) error {
	if err := s.grow(size); err != nil {
		return err
	}
	if err := s.f.Truncate(size); err != nil {
		return err
	}
	s.mu.Lock()
	shrink := s.size - size
	if shrink > 0 {
		s.size = size
	}
	s.mu.Unlock()
	if shrink > 0 {
		s.dir.release(shrink)
	}
	return nil
}

// grow accounts the file growing to end.
func (s *Staging) grow(end int64) error {
	s.mu.Lock()
	want := end - s.size
	s.mu.Unlock()
	if want <= 0 {
		return nil
	}
	if err := s.dir.reserve(want); err != nil {
		return err
	}
	// The size may have changed while waiting (another writer grew it, a
	// truncate shrank it): account what the growth really is.
	s.mu.Lock()
	actual := max(0, end-s.size)
	s.size = max(s.size, end)
	s.mu.Unlock()
	s.dir.release(want - actual) // negative: adds the difference
	return nil
}

// Sync flushes the staged content (and size) to the disk.
func (s *Staging) Sync() error { return syscall.Fdatasync(int(s.f.Fd())) }

// Close frees the descriptor. A named staging file stays on disk (the
// journal may need it); Remove deletes it.
func (s *Staging) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.dir.count.Add(-1)
	if s.name == "" {
		s.mu.Lock()
		n := s.size
		s.size = 0
		s.mu.Unlock()
		s.dir.release(n)
	}
	return s.f.Close()
}

// CopyTo returns a new staging file with the same content (copy on write
// of a file whose staged content belongs to a queued upload).
func (s *Staging) CopyTo(d *Dir) (*Staging, error) {
	c, err := d.NewStaging()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	size := s.size
	s.mu.Unlock()
	if err := c.grow(size); err != nil {
		c.Close()
		c.Remove()
		return nil, err
	}
	if _, err := io.Copy(io.NewOffsetWriter(c.f, 0), io.NewSectionReader(s.f, 0, size)); err != nil {
		c.Close()
		c.Remove()
		return nil, err
	}
	return c, nil
}

// Remove deletes a named staging file and releases its space.
func (s *Staging) Remove() {
	s.Close()
	if s.name != "" {
		os.Remove(s.name) // a missing file is already what we want
		s.mu.Lock()
		n := s.size
		s.size = 0
		s.mu.Unlock()
		s.dir.release(n)
	}
}

func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
