// Package cache owns the local disk side of ossmount: the cache directory
// (0700) and the staging files (0600) that hold what programs write until it
// is uploaded.
//
// A staging file is unlinked as soon as it is created: it lives exactly as
// long as its open descriptor, so no staging file can outlive the process,
// whether it exits, fails or is killed.
package cache

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
)

// Dir is a cache directory.
type Dir struct {
	path  string
	count atomic.Int64 // staging files open, for tests and status
}

// OpenDir creates path (and parents) if needed and makes sure it is a
// directory only its owner can enter.
func OpenDir(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("cache directory %s is not a directory", path)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(path, 0o700); err != nil {
			return nil, fmt.Errorf("cache directory: %w", err)
		}
	}
	return &Dir{path: path}, nil
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

// Staging is the local copy of one file's content. It is safe for
// concurrent use: reads and writes at different offsets go straight to the
// file (pread/pwrite).
type Staging struct {
	dir    *Dir
	f      *os.File
	closed atomic.Bool
}

// NewStaging creates an empty staging file.
func (d *Dir) NewStaging() (*Staging, error) {
	f, err := os.OpenFile(filepath.Join(d.path, "."), os.O_RDWR|oTmpfile, 0o600)
	if err != nil {
		// No O_TMPFILE on this file system: create, then unlink at once.
		f, err = os.CreateTemp(d.path, "staging-")
		if err != nil {
			return nil, fmt.Errorf("staging file: %w", err)
		}
		os.Remove(f.Name())
		if err := f.Chmod(0o600); err != nil {
			f.Close()
			return nil, err
		}
	}
	d.count.Add(1)
	return &Staging{dir: d, f: f}, nil
}

func (s *Staging) ReadAt(p []byte, off int64) (int, error)  { return s.f.ReadAt(p, off) }
func (s *Staging) WriteAt(p []byte, off int64) (int, error) { return s.f.WriteAt(p, off) }
func (s *Staging) Truncate(size int64) error                { return s.f.Truncate(size) }

// Sync flushes the staged content to the disk.
func (s *Staging) Sync() error { return s.f.Sync() }

// Close frees the staging file. It is idempotent.
func (s *Staging) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.dir.count.Add(-1)
	return s.f.Close()
}
