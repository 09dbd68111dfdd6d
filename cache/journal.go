package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ossmount/ossmount/internal/fsutil"
)

// Journal is the write-back journal: one record per file whose close was
// acknowledged and whose upload has not finished. A record is made durable
// before close returns, so that after a crash the next mount uploads
// everything that was acknowledged.
//
// Where the file system has user extended attributes, a record is an
// attribute of the staged file it describes: one fsync makes the content
// and the record durable together (and a directory sync the file's entry).
// Elsewhere it is a file ID.json beside the staged file.
type Journal struct {
	files   *Dir
	dir     string
	dirFile *os.File // dir, kept open to sync its entries
	lock    *os.File // flock'd for the life of the mount
	inXattr bool     // records are extended attributes of staged files
}

// recordXattr names the extended attribute that holds a record.
const recordXattr = "user.ossmount.record"

// Close releases the journal's lock; the lock file itself stays.
func (j *Journal) Close() error {
	j.dirFile.Close()
	return j.lock.Close()
}

// syncDir makes the directory entries of staged files and records durable.
func (j *Journal) syncDir() error { return j.dirFile.Sync() }

// Record is what must be uploaded: the staged file's content as Key with
// the user metadata Meta.
type Record struct {
	ID   string
	Key  string
	File string // named staging file
	Size int64
	Meta map[string]string
	// Seq orders records: after a crash the newest version of an ID
	// wins, and of the records naming one key the one bound to it last
	// (a rename or chmod rewrites a record with a new Seq).
	Seq int64
	// Sum is the CRC-32C of the staged content (hex), for files of at
	// most maxSummed bytes: a record that a crash brings back after its
	// removal no longer matches once the file holds other bytes (ghosts).
	Sum string `json:",omitempty"`
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
	// Record files live beside the staged files they name, so that one sync
	// of that directory makes both entries durable.
	dirFile, err := os.Open(d.named)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	inXattr := xattrsWork(d.named)
	d.reuseNamed = inXattr
	return &Journal{files: d, dir: d.named, dirFile: dirFile, lock: lock, inXattr: inXattr}, nil
}

// xattrsWork reports whether files in dir take user extended attributes.
func xattrsWork(dir string) bool {
	f, err := os.CreateTemp(dir, ".tmp-probe-")
	if err != nil {
		return false
	}
	defer os.Remove(f.Name())
	defer f.Close()
	return unix.Fsetxattr(int(f.Fd()), recordXattr, []byte("{}"), 0) == nil
}

// ErrGhost says a journal record was removed after its upload and brought
// back by a crash: its staged file holds other bytes now (Record.Sum).
var ErrGhost = errors.New("journal record of an upload already done")

// OpenNamed opens the named staging file of a record found through the
// journal (bytes past the record's size are stale). As NewStaging, it waits
// at the bound on open staging files while uploads are under way: a journal
// may hold more files than this mount may open.
func (d *Dir) OpenNamed(r Record) (*Staging, error) {
	d.takeSlot()
	path, size := r.File, r.Size
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		d.giveBackSlot()
		return nil, err
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
	case fi.Size() < size && r.Sum != "":
		err = ErrGhost
	case fi.Size() < size:
		err = fmt.Errorf("staged file %s has %d bytes, its record says %d", path, fi.Size(), size)
	case r.Sum != "":
		var sum string
		if sum, err = checksum(f, size); err == nil && sum != r.Sum {
			err = ErrGhost
		}
	}
	if err != nil {
		f.Close()
		d.giveBackSlot()
		return nil, err
	}
	s := &Staging{dir: d, f: f, name: path, size: size, extent: fi.Size(), durable: true}
	d.mu.Lock()
	d.used += size
	d.trackStaleLocked(s)
	d.mu.Unlock()
	return s, nil
}

// RemoveUnjournaled deletes named staging files no record names: files
// being written when the process died, whose close was never acknowledged,
// and idle and spare files. It runs before any staging file is made
// (spares too: NewStaging).
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

// Add makes the staged content of st and its first record r durable; it
// fills in r.Sum. A crash before it returns leaves at worst a torn record,
// which Load drops: that close was never acknowledged.
func (j *Journal) Add(r *Record, st *Staging) error {
	if j.inXattr && r.Size <= maxSummed {
		err := st.withFile(func(f *os.File) (err error) {
			r.Sum, err = checksum(f, r.Size)
			return err
		})
		if err != nil {
			return err
		}
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if j.inXattr {
		if err := writeXattrRecord(st, raw); err != nil {
			return err
		}
		// A reused staging file's entry is on disk already.
		if st.durable {
			return nil
		}
		if err := j.syncDir(); err != nil {
			return err
		}
		st.durable = true
		return nil
	}
	if err := st.Sync(); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(j.dir, r.ID+".json"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fsutil.WriteFileAtomic(filepath.Join(j.dir, r.ID+".json"), raw)
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
		err = j.syncDir()
	}
	return err
}

// Put replaces the record of st's version durably (rename, chmod).
func (j *Journal) Put(r Record, st *Staging) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if j.inXattr {
		return writeXattrRecord(st, raw)
	}
	return fsutil.WriteFileAtomic(filepath.Join(j.dir, r.ID+".json"), raw)
}

// writeXattrRecord attaches raw to the staged file and fsyncs it, so that
// its content and its record are durable together (and a ghost record it
// replaces is gone for good).
func writeXattrRecord(st *Staging, raw []byte) error {
	return st.withFile(func(f *os.File) error {
		if err := unix.Fsetxattr(int(f.Fd()), recordXattr, raw, 0); err != nil {
			return err
		}
		if err := unix.Fsync(int(f.Fd())); err != nil {
			return err
		}
		st.dir.laid(f)
		return nil
	})
}

// A tombstone replaces a removed record. Records do not fit in an inode's
// own attribute space (ext4: under 80 bytes), so they live in an attribute
// block; removing the attribute frees that block — with the `discard`
// mount option a synchronous discard — and the next record allocates one
// again, which the next fsync must write out too. A value as large
// rewrites the block in place. It holds the file's name: ext4 shares
// identical attribute blocks between inodes, and a shared block is freed
// and allocated anew all the same (on this VM's ext4: tombstone 84 → 11
// µs, the next record 14 → 6 µs). No record starts with its first byte.
const tombstoneSize = 128

func tombstoneFor(f *os.File) []byte {
	t := bytes.Repeat([]byte("-"), tombstoneSize)
	copy(t[1:], filepath.Base(f.Name()))
	return t
}

func isTombstone(raw []byte) bool { return len(raw) > 0 && raw[0] == '-' }

// removeXattrRecord replaces f's record with its tombstone; none is no
// error.
func removeXattrRecord(f *os.File) error {
	err := unix.Fsetxattr(int(f.Fd()), recordXattr, tombstoneFor(f), unix.XATTR_REPLACE)
	if err != nil && !errors.Is(err, unix.ENODATA) {
		return err
	}
	return nil
}

// Done drops the record of the version staged in st, uploaded or dropped.
// latest says no newer version of r.ID is queued (a record file describes
// only the newest version).
//
// With mayHaunt (the version was uploaded and nothing newer of the file
// is acknowledged) a record with a Sum is removed without an fsync: a
// crash may bring it back (a ghost), but the next mount drops it once the
// file holds other bytes, and uploads the same bytes again otherwise —
// harmless as long as the object still holds them, which Settle sees to.
// Any other record goes durably before the file is reused or deleted.
func (j *Journal) Done(r Record, st *Staging, latest, mayHaunt bool) error {
	if j.inXattr {
		return st.withFile(func(f *os.File) error {
			if err := removeXattrRecord(f); err != nil {
				return err
			}
			if mayHaunt && r.Sum != "" {
				st.dir.haunt(f, r.Key)
			}
			return nil
		})
	}
	if !latest {
		return nil
	}
	err := os.Remove(filepath.Join(j.dir, r.ID+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	// Durably: a record a crash brought back would upload its version
	// again, over whatever another file wrote to the key since.
	return j.syncDir()
}

// Load returns every record, the newest version of each ID. Leftovers of
// interrupted writes and older versions are removed, and so are records
// that a newer one of the same key replaces — a crash inside a rename onto
// a queued file leaves both — durably: replayed alone later, one would
// bring its old content back.
func (j *Journal) Load() ([]Record, error) {
	entries, err := os.ReadDir(j.dir)
	if err != nil {
		return nil, err
	}
	newest := map[string]Record{}
	for _, e := range entries {
		p := filepath.Join(j.dir, e.Name())
		if strings.HasPrefix(e.Name(), ".tmp-") {
			os.Remove(p)
			continue
		}
		var raw []byte
		if j.inXattr {
			if strings.HasSuffix(e.Name(), ".json") {
				os.Remove(p) // left by a mount without extended attributes
				continue
			}
			raw, err = readXattr(p)
			if err != nil || isTombstone(raw) {
				continue // no record: never acknowledged, or done
			}
		} else {
			if !strings.HasSuffix(e.Name(), ".json") {
				continue
			}
			if raw, err = os.ReadFile(p); err != nil {
				return nil, err
			}
		}
		var r Record
		if err := json.Unmarshal(raw, &r); err != nil {
			// Torn by a crash before its close was acknowledged.
			os.Remove(p)
			continue
		}
		if old, ok := newest[r.ID]; ok {
			if old.Seq > r.Seq {
				os.Remove(r.File)
				continue
			}
			os.Remove(old.File)
		}
		newest[r.ID] = r
	}
	byKey := map[string]Record{}
	replaced := false
	for _, r := range newest {
		old, ok := byKey[r.Key]
		if ok && (old.Seq > r.Seq || old.Seq == r.Seq && old.ID > r.ID) {
			old, r = r, old
		}
		if ok {
			j.remove(old)
			replaced = true
		}
		byKey[r.Key] = r
	}
	if replaced {
		if err := j.syncDir(); err != nil {
			return nil, err
		}
	}
	out := make([]Record, 0, len(byKey))
	for _, r := range byKey {
		out = append(out, r)
	}
	return out, nil
}

// remove deletes r's staged file and its record.
func (j *Journal) remove(r Record) {
	os.Remove(r.File)
	if !j.inXattr {
		os.Remove(filepath.Join(j.dir, r.ID+".json"))
	}
}

func readXattr(path string) ([]byte, error) { return readXattrNamed(path, recordXattr) }

// readXattrNamed reads path's extended attribute name.
func readXattrNamed(path, name string) ([]byte, error) {
	buf := make([]byte, 4096)
	for {
		n, err := unix.Getxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
