package cache

import (
	"container/list"
	"strings"
)

// Kept copies. A file's staging file went at its last release once the
// bucket had its content, so the next edit — a line appended to a log, a
// second sed -i, a database opened again — first copied the whole object
// in again. A staging file released clean, of at least KeepMin bytes,
// whose every byte is a known object version (SetSource) is now kept
// under its key, the least recently kept going first when the bounds
// below are reached or a writer needs the room. The file system takes it
// back at the next open that finds the object still at that version (a
// HEAD, far cheaper than the copy), and its upload then copies on the
// server what stays unchanged (upload/copying.go) — an append to a big
// log sends a part, not the log. Reads of the file (cmp after cp) are
// served from it the same way.
//
// A kept file is not marked uploaded (MarkUploaded): a writer short of
// room evicts kept files at once, it does not wait for them.

const (
	// KeepMin is the smallest file kept (SetKeepMin may lower it): below
	// it a GET of the object costs about what the HEAD that checks a kept
	// copy does.
	KeepMin = 1 << 20
	// maxKept bounds the files kept (each holds a descriptor).
	maxKept = 256
	// keptShare is the share of cache_size kept files may hold; without a
	// cache_size, keptNoLimit bytes.
	keptShare   = 2
	keptNoLimit = 1 << 30
)

// kept is one kept staging file.
type kept struct {
	key  string
	s    *Staging
	etag string
	size int64
	held int64 // its bytes in used
	elem *list.Element
	// unchecked: filed by an earlier mount (keptdisk.go), its content
	// not yet compared with the object's CRC-64.
	unchecked bool
}

// keptSet is the kept files, by key and in the order they were kept.
type keptSet struct {
	byKey map[string]*kept
	order list.List // of *kept, oldest first
	bytes int64     // held by them
}

// SetKeepMin sets the smallest file kept (KeepMin by default); call it
// before the directory is used.
func (d *Dir) SetKeepMin(n int64) { d.keepMin = n }

// Keep keeps s, released clean, as the content of key — if all of it is
// one object version and it fits the bounds; otherwise s is removed. It
// replaces whatever was kept for key before.
func (d *Dir) Keep(key string, s *Staging) {
	s.mu.Lock()
	size, held := s.size, s.heldLocked()
	whole := s.src != nil && s.dropped.Load() == 0 && s.absent == nil && s.src.clean.in(0, size) == size
	etag := ""
	if whole {
		etag = s.src.etag
	}
	s.mu.Unlock()
	d.mu.Lock()
	evict := d.forgetKeptLocked(key)
	budget := d.keptBudgetLocked()
	keep := whole && etag != "" && d.fitsLocked(size, held)
	for keep && !d.closed && d.diskLowLocked() {
		keep = d.evictKeptLocked() // lets go of d.mu meanwhile
	}
	if !keep || d.closed {
		d.mu.Unlock()
		evict.remove()
		s.Remove()
		return
	}
	var over []*kept
	if other := d.forgetKeptLocked(key); other != nil {
		over = append(over, other) // kept while d.mu was let go
	}
	d.addKeptLocked(&kept{key: key, s: s, etag: etag, size: size, held: held})
	for d.keep.bytes > budget || d.keep.order.Len() > d.maxKeptLocked() {
		over = append(over, d.popKeptLocked())
	}
	d.mu.Unlock()
	// Only now, kept or gone: a writer short of room that saw the uploaded
	// mark go before either would give up (reserve).
	s.unmark()
	evict.remove()
	for _, o := range over {
		o.remove()
	}
}

// KeptCopy is a kept staging file and the object version it holds.
type KeptCopy struct {
	*Staging // nil: none is kept
	ETag     string
	Size     int64
	// Unchecked: filed by an earlier mount; its content must match the
	// object's CRC-64 before it is used (then call Checked).
	Unchecked bool
}

// TakeKept hands back the staging file kept for key; Staging is nil if
// none is. The caller owns it: it checks that the object is still that
// version, and removes it if not.
func (d *Dir) TakeKept(key string) KeptCopy {
	d.mu.Lock()
	k := d.forgetKeptLocked(key)
	d.mu.Unlock()
	if k == nil {
		return KeptCopy{}
	}
	if err := d.takeFiled(k.s); err != nil {
		k.remove()
		return KeptCopy{}
	}
	k.s.MarkUploaded() // as it was before it was kept
	return KeptCopy{Staging: k.s, ETag: k.etag, Size: k.size, Unchecked: k.unchecked}
}

// LookKept returns the staging file kept for key without taking it, and
// makes it the last to go; Staging is nil if none is kept. A reader of it
// must take os.ErrClosed for "gone".
func (d *Dir) LookKept(key string) KeptCopy {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := d.keep.byKey[key]
	if k == nil {
		return KeptCopy{}
	}
	d.keep.order.MoveToBack(k.elem)
	return KeptCopy{Staging: k.s, ETag: k.etag, Size: k.size, Unchecked: k.unchecked}
}

// Checked says the copy kept for key as s matched its object's CRC-64.
func (d *Dir) Checked(key string, s *Staging) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if k := d.keep.byKey[key]; k != nil && k.s == s {
		k.unchecked = false
	}
}

// RenameKept files what is kept for oldKey under newKey (a rename of the
// file); what newKey had goes. A server that gives the copy another ETag
// makes the next check fail, and the copy goes then.
func (d *Dir) RenameKept(oldKey, newKey string) {
	d.mu.Lock()
	replaced := d.forgetKeptLocked(newKey)
	k := d.forgetKeptLocked(oldKey)
	if k != nil {
		k.key = newKey
		d.addKeptLocked(k)
	}
	d.mu.Unlock()
	replaced.remove()
}

// RenameKeptBelow files what is kept under keys below oldPrefix under
// newPrefix instead (a directory rename).
func (d *Dir) RenameKeptBelow(oldPrefix, newPrefix string) {
	d.mu.Lock()
	var moved []string
	for key := range d.keep.byKey {
		if strings.HasPrefix(key, oldPrefix) {
			moved = append(moved, key)
		}
	}
	d.mu.Unlock()
	for _, key := range moved {
		d.RenameKept(key, newPrefix+strings.TrimPrefix(key, oldPrefix))
	}
}

// DropKept removes what is kept for key (its object is gone or replaced).
func (d *Dir) DropKept(key string) {
	d.mu.Lock()
	k := d.forgetKeptLocked(key)
	d.mu.Unlock()
	k.remove()
}

// Kept returns how many files are kept and their bytes.
func (d *Dir) Kept() (files int, bytes int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.keep.order.Len(), d.keep.bytes
}

// forgetKeptLocked takes key's kept file out of the set; the caller
// removes or uses it. LOCKS_REQUIRED(d.mu)
func (d *Dir) forgetKeptLocked(key string) *kept {
	k := d.keep.byKey[key]
	if k != nil {
		d.dropKeptLocked(k)
	}
	return k
}

// popKeptLocked takes the oldest kept file out of the set (nil: none).
// LOCKS_REQUIRED(d.mu)
func (d *Dir) popKeptLocked() *kept {
	e := d.keep.order.Front()
	if e == nil {
		return nil
	}
	k := e.Value.(*kept)
	d.dropKeptLocked(k)
	return k
}

// addKeptLocked puts k in the set, as the newest. LOCKS_REQUIRED(d.mu)
func (d *Dir) addKeptLocked(k *kept) {
	if d.keep.byKey == nil {
		d.keep.byKey = make(map[string]*kept)
	}
	d.keep.byKey[k.key] = k
	k.elem = d.keep.order.PushBack(k)
	d.keep.bytes += k.held
}

// dropKeptLocked takes k out of the set. LOCKS_REQUIRED(d.mu)
func (d *Dir) dropKeptLocked(k *kept) {
	if d.keep.byKey[k.key] == k {
		delete(d.keep.byKey, k.key)
	}
	d.keep.order.Remove(k.elem)
	d.keep.bytes -= k.held
}

// evictKept removes the oldest kept file; it reports whether there was one.
// LOCKS_REQUIRED(d.mu), which it lets go of meanwhile.
func (d *Dir) evictKeptLocked() bool {
	k := d.popKeptLocked()
	if k == nil {
		return false
	}
	d.mu.Unlock()
	k.remove()
	d.mu.Lock()
	return true
}

// dropAllKept removes every kept file (a full disk, the unmount).
func (d *Dir) dropAllKept() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	any := false
	for d.evictKeptLocked() {
		any = true
	}
	return any
}

// diskLowLocked reports whether the cache disk has less than a tenth of
// it free (or than ensure_diskfree): a copy kept for speed must not be
// what fills the disk another program writes to. LOCKS_REQUIRED(d.mu)
func (d *Dir) diskLowLocked() bool {
	size, free, err := d.DiskSpace()
	if err != nil {
		return true
	}
	return free < size/10 || free < d.minFree
}

// SetKeptBudget bounds the bytes kept files hold (0: none are kept); call
// it before the directory is used.
func (d *Dir) SetKeptBudget(n int64) { d.keptBudget = n }

// Keepable reports whether a whole copy of an object of size bytes could be
// kept once uploaded: it is not too small to pay off, nor over the budget.
func (d *Dir) Keepable(size int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fitsLocked(size, size)
}

// fitsLocked reports whether a copy of a file of size bytes, held bytes of
// them on the disk, is one to keep. LOCKS_REQUIRED(d.mu)
func (d *Dir) fitsLocked(size, held int64) bool {
	budget := d.keptBudgetLocked()
	return size >= d.keepMin && held <= budget && budget > 0
}

// keptBudgetLocked is the most bytes kept files may hold: SetKeptBudget's,
// or by default a share of the cache size. LOCKS_REQUIRED(d.mu)
func (d *Dir) keptBudgetLocked() int64 {
	if d.keptBudget >= 0 {
		return d.keptBudget
	}
	if d.limit > 0 {
		return d.limit / keptShare
	}
	return keptNoLimit
}

// maxKeptLocked is the most files kept: maxKept, or fewer under a low
// descriptor limit. LOCKS_REQUIRED(d.mu)
func (d *Dir) maxKeptLocked() int { return int(min(maxKept, d.maxOpen/8)) }

func (k *kept) remove() {
	if k != nil {
		k.s.Remove()
	}
}
