package cache

import (
	"strings"
	"sync"
	"time"
)

// Listings remembers the complete entry list of directories for a while
// (the stat TTL), so that looking up a name the directory does not have
// costs no request. The mount's own changes are applied to the cached
// lists at once; changes by other clients show after the TTL.
//
// Safe for concurrent use. Directories are identified by their key prefix
// ("" for the bucket root, else ending in "/").
type Listings struct {
	ttl time.Duration
	now func() time.Time

	mu   sync.Mutex
	dirs map[string]*listing // GUARDED_BY(mu)
	// stamps numbers the lists and the changes made to them (Stamps).
	stamps uint64 // GUARDED_BY(mu)
}

type listing struct {
	at      time.Time
	entries map[string]bool // name -> is a directory
	made    uint64          // the stamp of its making
	// changed holds the stamp of the last change this mount made to a
	// name since (Add, Remove).
	changed map[string]uint64
}

// NewListings returns an empty cache; ttl 0 disables it.
func NewListings(ttl time.Duration, now func() time.Time) *Listings {
	if now == nil {
		now = time.Now
	}
	return &Listings{ttl: ttl, now: now, dirs: map[string]*listing{}}
}

// Put records the complete list of dir's entries (name -> is a directory).
func (l *Listings) Put(dir string, entries map[string]bool) {
	if l.ttl <= 0 {
		return
	}
	copied := make(map[string]bool, len(entries))
	for k, v := range entries {
		copied[k] = v
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stamps++
	l.dirs[dir] = &listing{at: l.now(), entries: copied, made: l.stamps, changed: map[string]uint64{}}
	if len(l.dirs) > 10000 {
		l.expireLocked()
	}
}

// expireLocked drops expired lists. LOCKS_REQUIRED(l.mu)
func (l *Listings) expireLocked() {
	for k, d := range l.dirs {
		if l.now().Sub(d.at) >= l.ttl {
			delete(l.dirs, k)
		}
	}
}

// freshLocked returns dir's list unless there is none or it expired.
// LOCKS_REQUIRED(l.mu)
func (l *Listings) freshLocked(dir string) *listing {
	if d, ok := l.dirs[dir]; ok && l.now().Sub(d.at) < l.ttl {
		return d
	}
	return nil
}

// Lookup answers from a fresh list of dir: known is false when there is
// none; otherwise exists and isDir say what dir holds under name. stale is
// the number of entries of a list kept but too old (-1: none was): the
// directory is in use, and if it is small, listing it again is likely
// cheaper than looking up names one by one.
func (l *Listings) Lookup(dir, name string) (known, exists, isDir bool, stale int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d, ok := l.dirs[dir]
	if !ok {
		return false, false, false, -1
	}
	if l.now().Sub(d.at) >= l.ttl {
		delete(l.dirs, dir)
		return false, false, false, len(d.entries)
	}
	isDir, exists = d.entries[name]
	return true, exists, isDir, -1
}

// Stamps identifies dir's fresh list (made: a new list has a new one) and
// name in it as it is now (changed: every change this mount makes to name
// gives it a new one; the list's own stamp until then). ok is false when
// no fresh list is kept. What was learned about name while both were the
// same holds as long as they are: a change to another name (rm -r
// unlinking the entries one by one) leaves it standing.
func (l *Listings) Stamps(dir, name string) (made, changed uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.freshLocked(dir)
	if d == nil {
		return 0, 0, false
	}
	changed, ok = d.changed[name]
	if !ok {
		changed = d.made
	}
	return d.made, changed, true
}

// Made is the stamp of dir's fresh list (a new list has a new one); ok is
// false when no fresh list is kept.
func (l *Listings) Made(dir string) (made uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d := l.freshLocked(dir); d != nil {
		return d.made, true
	}
	return 0, false
}

// Untouched is Made for a fresh list that this mount has changed nothing
// in since it was made (Add, Remove): what the listing said, it says.
func (l *Listings) Untouched(dir string) (made uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d := l.freshLocked(dir); d != nil && len(d.changed) == 0 {
		return d.made, true
	}
	return 0, false
}

// Add records that dir now holds name.
func (l *Listings) Add(dir, name string, isDir bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d, ok := l.dirs[dir]; ok {
		d.entries[name] = isDir || d.entries[name]
		l.stamps++
		d.changed[name] = l.stamps
	}
}

// Remove records that dir no longer holds name as a file (isDir false) or
// as a directory.
func (l *Listings) Remove(dir, name string, isDir bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d, ok := l.dirs[dir]; ok {
		if d.entries[name] == isDir {
			delete(d.entries, name)
		}
		l.stamps++
		d.changed[name] = l.stamps
	}
}

// ForgetBelow drops the lists of prefix and of every directory below it.
func (l *Listings) ForgetBelow(prefix string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k := range l.dirs {
		if strings.HasPrefix(k, prefix) {
			delete(l.dirs, k)
		}
	}
}
