package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ossmount/ossmount/internal/crc64"
)

// Kept copies across mounts. At the unmount the kept files are filed in
// DIR/kept/NAMESPACE/, each with its key and version in an attribute,
// instead of deleted; the next mount of the bucket with the same cache
// directory keeps them again, so that an edit after a restart costs a HEAD
// instead of the whole object. Nothing of the unmount is synced: a copy
// that comes back from the disk is checked, before its first use, against
// the object's CRC-64 (x-oss-hash-crc64ecma) as well as its ETag and size
// — a torn write, a file changed on disk, or a server that sends no CRC-64
// costs the copy, never a wrong edit. One mount at a time files and takes
// them (a lock); another mount of the bucket keeps none across mounts.

// keptXattr names the attribute that holds a filed copy's keptRecord.
const keptXattr = "user.ossmount.kept"

// keptMaxAge is how long a filed copy waits for a mount of its bucket:
// any mount deletes older ones, of any bucket whose copies no mount holds
// — a bucket never mounted again must not keep its copies on the disk.
var keptMaxAge = 7 * 24 * time.Hour // a variable for the tests

// keptRecord says which object version a filed copy holds.
type keptRecord struct {
	Key  string
	ETag string
	Size int64
	Seq  int // order kept in: the oldest first
}

// PersistKept files kept copies under namespace across mounts: it takes
// those an earlier mount filed (unchecked, see above) and files this
// mount's at Close. It does nothing when another mount holds the
// namespace's lock; call it before the directory is used.
func (d *Dir) PersistKept(namespace string) error {
	dir := filepath.Join(d.path, "kept", namespace)
	if err := ensurePrivateDir(dir); err != nil {
		return err
	}
	lock, err := lockFiled(dir)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return nil // another mount's
	}
	if err != nil {
		return err
	}
	d.keptDir, d.keptLock = dir, lock
	d.loadKept()
	d.dropStaleFiled()
	return nil
}

// dropStaleFiled deletes the copies older than keptMaxAge that other
// namespaces filed, where no mount holds them.
func (d *Dir) dropStaleFiled() {
	root := filepath.Dir(d.keptDir)
	dirs, _ := os.ReadDir(root)
	for _, e := range dirs {
		dir := filepath.Join(root, e.Name())
		if !e.IsDir() || dir == d.keptDir {
			continue
		}
		if lock, err := lockFiled(dir); err == nil {
			dropOlder(dir, time.Now().Add(-keptMaxAge))
			lock.Close()
		}
	}
}

// lockFiled takes the lock of a namespace's filed copies, without
// waiting: a mount holds it for as long as it runs.
func lockFiled(dir string) (*os.File, error) {
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, err
	}
	return lock, nil
}

// dropOlder deletes the filed copies in dir last filed (their ctime: a
// rename or link sets it) before t.
func dropOlder(dir string, t time.Time) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if e.Name() != ".lock" && unix.Lstat(path, &st) == nil && time.Unix(st.Ctim.Unix()).Before(t) {
			os.Remove(path)
		}
	}
}

// loadKept takes the copies filed in d.keptDir, the newest within the
// bounds; it deletes the rest. Only the copies taken are opened: an earlier
// mount with more descriptors may have filed more than this one may hold
// open.
func (d *Dir) loadKept() {
	entries, _ := os.ReadDir(d.keptDir)
	type filed struct {
		rec  keptRecord
		path string
	}
	var found []filed
	notBefore := time.Now().Add(-keptMaxAge)
	for _, e := range entries {
		if e.Name() == ".lock" {
			continue
		}
		path := filepath.Join(d.keptDir, e.Name())
		rec, err := readFiled(path)
		if err != nil {
			os.Remove(path)
			continue
		}
		found = append(found, filed{rec, path})
	}
	slices.SortFunc(found, func(a, b filed) int { return b.rec.Seq - a.rec.Seq }) // newest first
	d.mu.Lock()
	defer d.mu.Unlock()
	budget, taken, seen := d.keptBudgetLocked(), []*kept(nil), map[string]bool{}
	var bytes int64
	for _, c := range found {
		if seen[c.rec.Key] || bytes+c.rec.Size > budget || len(taken) >= d.maxKeptLocked() || c.rec.Size < d.keepMin {
			os.Remove(c.path)
			continue
		}
		f, err := openFiled(c.path, c.rec, notBefore)
		if err != nil {
			os.Remove(c.path)
			continue
		}
		seen[c.rec.Key] = true
		bytes += c.rec.Size
		s := &Staging{dir: d, f: f, name: f.Name(), size: c.rec.Size, extent: c.rec.Size}
		s.src = &source{key: c.rec.Key, etag: c.rec.ETag, clean: spans{}.add(0, c.rec.Size)}
		taken = append(taken, &kept{key: c.rec.Key, s: s, etag: c.rec.ETag, size: c.rec.Size, held: c.rec.Size, unchecked: true})
	}
	for _, k := range slices.Backward(taken) { // the oldest goes first
		d.addKeptLocked(k)
		d.used += k.held
		d.count.Add(1)
	}
}

// readFiled reads a filed copy's record.
func readFiled(path string) (keptRecord, error) {
	var rec keptRecord
	raw, err := readXattrNamed(path, keptXattr)
	if err == nil {
		err = json.Unmarshal(raw, &rec)
	}
	if err == nil && (rec.Key == "" || rec.ETag == "") {
		err = fmt.Errorf("%s: a record without key or ETag", path)
	}
	return rec, err
}

// openFiled opens a filed copy; it must be a regular file of its record's
// size, filed at notBefore or later.
func openFiled(path string, rec keptRecord, notBefore time.Time) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != rec.Size ||
		time.Unix(st.Ctim.Unix()).Before(notBefore) {
		f.Close()
		return nil, fmt.Errorf("%s: not the copy its record describes", path)
	}
	return f, nil
}

// persistKept files every kept copy in d.keptDir (at Close); what cannot
// be filed is removed.
func (d *Dir) persistKept() {
	d.mu.Lock()
	var all []*kept
	for k := d.popKeptLocked(); k != nil; k = d.popKeptLocked() {
		all = append(all, k)
	}
	d.mu.Unlock()
	for seq, k := range all {
		i, ok := k.s.detach()
		if !ok {
			continue
		}
		// A file whose removed journal record may come back (a ghost)
		// is not filed.
		if d.isGhost(i.f) || d.file(i, keptRecord{Key: k.key, ETag: k.etag, Size: k.size, Seq: seq}) != nil {
			d.dispose(i)
		} else {
			i.f.Close()
		}
		d.unaccount(k.s)
	}
	d.keptLock.Close()
}

// file gives an emptied-of-use staging file its record and a name in
// d.keptDir.
func (d *Dir) file(i idleFile, rec keptRecord) error {
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	fd := int(i.f.Fd())
	if err := unix.Ftruncate(fd, rec.Size); err != nil { // no stale tail
		return err
	}
	if err := unix.Fsetxattr(fd, keptXattr, raw, 0); err != nil {
		return err
	}
	dst := filepath.Join(d.keptDir, newID())
	if i.name != "" {
		return os.Rename(i.name, dst)
	}
	// An unnamed (O_TMPFILE) file gets a name through /proc.
	return unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, dst, unix.AT_SYMLINK_FOLLOW)
}

// takeFiled makes a filed copy taken for an edit in write-back mode one
// of the named staging files, whose journal records are the only ones a
// crash recovery looks for. In sync mode it stays where it is: an edit
// cut short by a crash leaves it filed, but changed, and the check of its
// CRC-64 drops it (an unlinked file cannot be linked again at the unmount,
// as an O_TMPFILE one can).
func (d *Dir) takeFiled(s *Staging) error {
	if d.keptDir == "" || d.named == "" || filepath.Dir(s.name) != d.keptDir {
		return nil
	}
	name := filepath.Join(d.named, newID())
	if err := os.Rename(s.name, name); err != nil {
		return err
	}
	s.name, s.durable = name, false
	return nil
}

// CRC64 is the CRC-64/ECMA of the staged content.
func (s *Staging) CRC64() (uint64, error) {
	s.mu.Lock()
	size := s.size
	s.mu.Unlock()
	var crc uint64
	err := s.withFile(func(f *os.File) (err error) {
		crc, err = crc64.ReaderAt(f, 0, size)
		return err
	})
	return crc, err
}
