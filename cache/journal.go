package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/ossmount/ossmount/internal/fsutil"
)

// Journal is the write-back journal: one record per file whose close was
// acknowledged and whose upload has not finished. A record is written
// (and fsync'd, with its directory) before close returns, so that after a
// crash the next mount uploads everything that was acknowledged.
type Journal struct {
	dir  string
	lock *os.File // flock'd for the life of the mount
}

// Close releases the journal's lock; the lock file itself stays.
func (j *Journal) Close() error { return j.lock.Close() }

// Record is what must be uploaded: the staged file's content as Key with
// the user metadata Meta.
type Record struct {
	ID   string
	Key  string
	File string // named staging file
	Size int64
	Meta map[string]string
}

// EnableWriteback switches the cache directory to named staging files under
// DIR/namespace/staged and returns the journal in DIR/namespace/journal.
// namespace separates mounts of different buckets sharing a directory.
func (d *Dir) EnableWriteback(namespace string) (*Journal, error) {
	base := filepath.Join(d.path, namespace)
	for _, sub := range []string{"", "staged"} {
		if err := ensurePrivateDir(filepath.Join(base, sub)); err != nil {
			return nil, fmt.Errorf("cache directory: %w", err)
		}
	}
	// One mount at a time may own a journal: a second one would replay
	// records the first is still uploading.
	lock, err := os.OpenFile(filepath.Join(base, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("the write-back journal in %s is in use by another ossmount (still draining?): %w", base, err)
	}
	d.named = filepath.Join(base, "staged")
	// Records live beside the staged files they name, so that one sync of
	// that directory makes both entries durable.
	return &Journal{dir: d.named, lock: lock}, nil
}

// OpenNamed opens a named staging file found through the journal.
func (d *Dir) OpenNamed(path string) (*Staging, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	d.mu.Lock()
	d.used += fi.Size()
	d.mu.Unlock()
	d.count.Add(1)
	return &Staging{dir: d, f: f, name: path, size: fi.Size()}, nil
}

// RemoveUnjournaled deletes named staging files no record names: files
// being written when the process died, whose close was never acknowledged.
func (d *Dir) RemoveUnjournaled(records []Record) (removed int) {
	if d.named == "" {
		return 0
	}
	keep := map[string]bool{}
	for _, r := range records {
		keep[filepath.Base(r.File)] = true
		keep[r.ID+".json"] = true
	}
	entries, _ := os.ReadDir(d.named)
	for _, e := range entries {
		if !keep[e.Name()] {
			os.Remove(filepath.Join(d.named, e.Name()))
			removed++
		}
	}
	return removed
}

// Add writes the first record of r.ID durably (with the directory entry of
// its staged file). A crash before it returns leaves at worst a torn
// record, which Load drops: that close was never acknowledged.
func (j *Journal) Add(r Record) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(j.dir, r.ID+".json"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return j.Put(r)
	}
	if err != nil {
		return err
	}
	_, err = f.Write(raw)
	if err == nil {
		err = syscall.Fdatasync(int(f.Fd()))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsutil.SyncDir(j.dir)
	}
	return err
}

// Put replaces the record of r.ID durably (rename, chmod, a newer version).
func (j *Journal) Put(r Record) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(j.dir, r.ID+".json"), raw)
}

// Delete removes the record of id.
func (j *Journal) Delete(id string) error {
	err := os.Remove(filepath.Join(j.dir, id+".json"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Load returns every record. Leftovers of interrupted writes are removed.
func (j *Journal) Load() ([]Record, error) {
	entries, err := os.ReadDir(j.dir)
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, e := range entries {
		p := filepath.Join(j.dir, e.Name())
		if strings.HasPrefix(e.Name(), ".tmp-") {
			os.Remove(p)
			continue
		}
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var r Record
		if err := json.Unmarshal(raw, &r); err != nil {
			// Torn by a crash before its close was acknowledged.
			os.Remove(p)
			continue
		}
		out = append(out, r)
	}
	return out, nil
}
