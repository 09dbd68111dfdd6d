package fs

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/upload"
)

// HEADs ahead of the kernel's lookups. The kernel looks up every entry of
// a directory it reads with READDIRPLUS — the first batch of any readdir,
// all of them for `ls -l` — one at a time, and a lookup of a file this
// mount knows nothing fresh about is a HEAD (a listing has no user
// metadata: mode, owner, mtime): `ls -l` of 1,000 objects another client
// wrote was 1,000 round trips in a row. A lookup of the first file of the
// last listing, or of the file after the one looked up before it, is taken
// for such a scan, and the HEADs of the next headsAhead files are started
// at once, for the lookups to come to take (s3fs does the HEADs of a whole
// listing in parallel).
const headsAhead = 16

// scan follows the kernel's lookups through a directory's last listing.
type scan struct {
	mu sync.Mutex
	// files are the listing's files in its order (nil: none); version is
	// the listing's (cache.Listings.Version) — the answers hold only as
	// long as the directory is as this mount listed it.
	files   []string              // GUARDED_BY(mu)
	index   map[string]int        // GUARDED_BY(mu)
	version uint64                // GUARDED_BY(mu)
	last    int                   // GUARDED_BY(mu); index of the last lookup; -1: none
	next    int                   // GUARDED_BY(mu); first index not yet considered ahead
	ahead   map[string]*headAhead // GUARDED_BY(mu)
}

// headAhead is a HEAD started before its lookup.
type headAhead struct {
	index   int
	started time.Time
	done    chan struct{}
	info    bucket.ObjectInfo // set once done is closed
	err     error
}

// listed starts following the lookups of a new listing of d.
func (d *dirNode) listed(entries []fuse.DirEntry) {
	version, fresh := d.fsys.listings.Version(d.dirKey())
	s := &d.scan
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files, s.index, s.ahead = nil, nil, nil
	if !fresh {
		return // not cached (stat_ttl=0, or a rename ran): no scan either
	}
	s.index = make(map[string]int)
	for _, e := range entries {
		if e.Mode == syscall.S_IFREG {
			s.index[e.Name] = len(s.files)
			s.files = append(s.files, e.Name)
		}
	}
	s.version, s.last, s.next = version, -1, 0
}

// headAhead returns the answer of a HEAD of name started ahead of this
// lookup; ok is false when there is none to take (then the caller asks).
// A lookup that goes on a scan starts the HEADs of the files after it.
func (d *dirNode) headAhead(ctx context.Context, name string) (info bucket.ObjectInfo, err error, ok bool) {
	version, fresh := d.fsys.listings.Version(d.dirKey())
	s := &d.scan
	s.mu.Lock()
	if !fresh || version != s.version {
		// Listed anew, changed, or expired: what was asked is void.
		s.files, s.index, s.ahead = nil, nil, nil
	}
	i, listed := s.index[name]
	if !listed {
		s.mu.Unlock()
		return bucket.ObjectInfo{}, nil, false
	}
	h := s.ahead[name]
	if h != nil || i == s.last+1 {
		d.startAheadLocked(i)
	}
	s.last = i
	s.mu.Unlock()
	if h == nil {
		return bucket.ObjectInfo{}, nil, false
	}
	select {
	case <-h.done:
	case <-ctx.Done():
		return bucket.ObjectInfo{}, nil, false
	}
	if h.err != nil && !errors.Is(h.err, bucket.ErrNotFound) {
		return bucket.ObjectInfo{}, nil, false // asked again, and logged, by the caller
	}
	// Not too old, and the directory still as it was when it was asked.
	if v, fresh := d.fsys.listings.Version(d.dirKey()); !fresh || v != version || !d.fsys.withinTTL(h.started) {
		return bucket.ObjectInfo{}, nil, false
	}
	return h.info, h.err, true
}

// startAheadLocked drops the HEADs started for files up to index i (taken,
// or skipped by the kernel) and starts those of the next headsAhead files
// that the mount knows nothing fresh about. LOCKS_REQUIRED(d.scan.mu)
func (d *dirNode) startAheadLocked(i int) {
	s := &d.scan
	for name, h := range s.ahead {
		if h.index <= i {
			delete(s.ahead, name)
		}
	}
	if s.ahead == nil {
		s.ahead = make(map[string]*headAhead)
	}
	dir := d.path()
	j := max(s.next, i+1)
	for ; j < len(s.files) && j <= i+headsAhead; j++ {
		name := s.files[j]
		if ch := d.child(name); ch != nil {
			if n, ok := ch.Operations().(*fileNode); ok && (n.isLocal() || n.fresh()) {
				continue // its lookup asks nothing
			}
		}
		h := &headAhead{index: j, started: d.fsys.now(), done: make(chan struct{})}
		s.ahead[name] = h
		key := d.fsys.fileKey(upload.Child(dir, name))
		go func() {
			defer close(h.done)
			h.info, h.err = d.fsys.bucket.Head(context.Background(), key)
		}()
	}
	s.next = j
}
