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

// Asking ahead of lookups. A program that stats what it lists — `ls -l`,
// `find`, `du`, rsync's second run — looks every entry up, one at a time
// (the kernel's READDIRPLUS only takes what the mount knows fresh, see
// readdir.go), and a lookup of an entry this mount knows nothing fresh
// about asks the bucket: a HEAD for a file (a listing has no user
// metadata: mode, owner, mtime), the marker's HEAD for a directory (one
// the listing holds exists). `ls -l` of 1,000 objects another client
// wrote was 1,000 round trips in a row. The first lookup through the last
// listing, or one of the entry after the one looked up before it, is taken
// for such a scan, and the requests of the next aheadLookups entries are
// started at once, for the lookups to come to take (s3fs does the HEADs of
// a whole listing in parallel, 20 at a time). More would be faster over a
// long link (ls -l of 2,000 objects at 10 ms a request: 1.6 s with 16,
// 0.9 s with 32, 0.6 s with 64), but the names of one directory are what
// OSS calls sequential, which it serves at 2,000 requests a second: in the
// same region, where a HEAD takes a few milliseconds, 16 reach that.
const aheadLookups = 16

// Listing on demand. Lookups in a directory the mount holds no fresh
// listing of ask the bucket one name at a time: the second run of rsync
// stats every file of the tree (a HEAD each), and a copy into an existing
// directory asks for every new name (a HEAD and a one-key listing). The
// second such lookup within stat_ttl lists the directory instead — a
// request per thousand entries — so that absent names cost nothing and
// present ones are asked ahead. A directory found to have more than
// listOnDemandPages thousand entries is left to lookups by name from then
// on (until a readdir finds it smaller): listing it, again every stat_ttl,
// could cost more than the lookups it saves.
const listOnDemandPages = 10

// listPageSize is the entries a listing asks for per request (OSS's most).
const listPageSize = 1000

// wantsListing counts a lookup in d that found no fresh listing, and says
// how many pages of d to list now, if any (0): up to listOnDemandPages at
// the second such lookup within stat_ttl; one at the first if a program
// walking the parent looked d up (with an answer asked ahead) — it goes on
// to stat what d holds (rsync, ls -lR), but a lookup of one name in a
// large directory must not wait for ten pages.
func (d *dirNode) wantsListing() (pages int) {
	if d.fsys.cfg.StatTTL <= 0 {
		return 0 // nothing would be kept
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.tooBig {
		return 0
	}
	if !d.fsys.withinTTL(d.unlistedSince) {
		d.unlisted, d.unlistedSince = 0, d.fsys.now()
	}
	d.unlisted++
	switch {
	case d.unlisted >= 2:
		return listOnDemandPages
	case d.fsys.withinTTL(d.walkedAt):
		return 1
	}
	return 0
}

// walked notes that a program walking the parent looked d up.
func (d *dirNode) walked() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.walkedAt = d.fsys.now()
}

// setTooBig notes whether d has more entries than a listing on demand
// reads.
func (d *dirNode) setTooBig(tooBig bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tooBig = tooBig
}

// scan follows the kernel's lookups through a directory's last listing.
type scan struct {
	mu sync.Mutex
	// entries are the listing's, in its order (nil: none); made is the
	// listing's stamp (cache.Listings.Made) — the scan holds as long as
	// the listing does, an answer as long as this mount changed nothing
	// under its name.
	entries []fuse.DirEntry   // GUARDED_BY(mu)
	index   map[string]int    // GUARDED_BY(mu)
	made    uint64            // GUARDED_BY(mu)
	last    int               // GUARDED_BY(mu); index of the last lookup; -1: none
	next    int               // GUARDED_BY(mu); first index not yet considered ahead
	ahead   map[string]*asked // GUARDED_BY(mu)
	// filesLooked says an entry listed as a regular file was looked up:
	// the program stats files whose type it knows (ls -l, du, rsync), so
	// their HEADs are worth asking ahead. Until then only the entries of
	// unknown type and directories are: find and fts walkers look up no
	// other (listedType).
	filesLooked bool // GUARDED_BY(mu)
}

// asked is a lookup's question to the bucket, put before the lookup.
type asked struct {
	name    string
	index   int
	isDir   bool
	stamp   uint64 // of the name in the directory's listing when asked
	started time.Time
	done    chan struct{}
	// Set once done is closed: a file's HEAD, or a directory's answer.
	file    bucket.ObjectInfo
	fileErr error
	dir     dirAnswer
}

// dirAnswer is what the bucket says about a directory key: one listing
// tells whether anything lies below; the marker, if there is one, sorts
// first and is read for its metadata. A directory the parent's fresh
// listing holds (listed) exists: only its marker is asked for — one
// request, not two in a row.
type dirAnswer struct {
	listed    bool
	page      bucket.ListPage
	listErr   error
	hasMarker bool
	marker    bucket.ObjectInfo
	headErr   error
}

func (f *FS) askDir(ctx context.Context, dirKey string, listed bool) (a dirAnswer) {
	if listed {
		a.listed = true
		a.marker, a.headErr = f.bucket.Head(ctx, dirKey)
		a.hasMarker = !errors.Is(a.headErr, bucket.ErrNotFound)
		return a
	}
	a.page, a.listErr = f.bucket.List(ctx, bucket.ListRequest{Prefix: dirKey, MaxKeys: 1})
	if a.hasMarker = a.listErr == nil && len(a.page.Objects) > 0 && a.page.Objects[0].Key == dirKey; a.hasMarker {
		a.marker, a.headErr = f.bucket.Head(ctx, dirKey)
	}
	return a
}

// usable says whether the answer may stand for the lookup's own request:
// a failure other than "not found" is asked again (and logged) by it.
func (a *asked) usable() bool {
	if a.isDir {
		return a.dir.listErr == nil && (a.dir.headErr == nil || errors.Is(a.dir.headErr, bucket.ErrNotFound))
	}
	return a.fileErr == nil || errors.Is(a.fileErr, bucket.ErrNotFound)
}

// listed starts following the lookups of a new listing of d.
func (d *dirNode) listed(entries []fuse.DirEntry) {
	made, fresh := d.fsys.listings.Made(d.dirKey())
	s := &d.scan
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries, s.index, s.ahead = nil, nil, nil
	if !fresh {
		return // not cached (stat_ttl=0, or a rename ran): no scan either
	}
	s.entries = entries
	s.index = make(map[string]int, len(entries))
	for i, e := range entries {
		s.index[e.Name] = i
	}
	s.made, s.last, s.next, s.filesLooked = made, -1, 0, false
}

// lookingUp notes a lookup of name through the last listing, and returns
// the question about name asked ahead of it, if any (answer waits for it).
// A lookup that goes on a scan starts the questions about the entries
// after it.
func (d *dirNode) lookingUp(name string) *asked {
	s := &d.scan
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.index == nil {
		return nil // no scan: most lookups, and no key to work out
	}
	if made, fresh := d.fsys.listings.Made(d.dirKey()); !fresh || made != s.made {
		// Listed anew, or expired: what was asked is void.
		s.entries, s.index, s.ahead = nil, nil, nil
	}
	i, listed := s.index[name]
	if !listed {
		return nil
	}
	if !s.filesLooked && s.entries[i].Mode == syscall.S_IFREG {
		// The files passed over since are asked ahead now.
		s.filesLooked, s.next = true, min(s.next, i+1)
	}
	// The first lookup since the listing (ls: of its first entry; after a
	// listing on demand: of the name after the one that asked for it), one
	// asked ahead, or the next one after the last.
	a := s.ahead[name]
	if a != nil || s.last < 0 || i == s.last+1 {
		d.askAheadLocked(i)
	}
	s.last = i
	return a
}

// answer waits for the answer about a directory (isDir) or file asked
// ahead, and returns it if it may stand for the lookup's own request:
// nil when none was asked, it is about the other kind, it is older than
// stat_ttl, the directory was listed anew or this mount changed the name
// since (an unlink of another name leaves it standing), or it failed
// otherwise than "not found" — the lookup then asks (and logs a failure)
// itself.
func (a *asked) answer(ctx context.Context, d *dirNode, isDir bool) *asked {
	if a == nil || a.isDir != isDir {
		return nil
	}
	select {
	case <-a.done:
	case <-ctx.Done():
		return nil
	}
	_, stamp, fresh := d.fsys.listings.Stamps(d.dirKey(), a.name)
	if !fresh || stamp != a.stamp || !d.fsys.withinTTL(a.started) || !a.usable() {
		return nil
	}
	return a
}

// askAheadLocked drops the questions about entry i (taken) and about files
// before it (skipped by the kernel), and asks about the next aheadLookups
// entries that the mount knows nothing fresh about. Directories passed
// over keep theirs: rsync stats a directory's files first and comes back
// for its subdirectories. LOCKS_REQUIRED(d.scan.mu)
func (d *dirNode) askAheadLocked(i int) {
	s := &d.scan
	for name, a := range s.ahead {
		if a.index == i || a.index < i && !a.isDir {
			delete(s.ahead, name)
		}
	}
	if s.ahead == nil {
		s.ahead = make(map[string]*asked)
	}
	dir := d.path()
	j := max(s.next, i+1)
	for ; j < len(s.entries) && j <= i+aheadLookups; j++ {
		e := s.entries[j]
		if s.ahead[e.Name] != nil {
			// Asked already: the first file looked up moved s.next back
			// over entries of unknown type asked before it.
			continue
		}
		if d.knowsFresh(e.Name) || e.Mode == syscall.S_IFREG && !s.filesLooked {
			continue // its lookup asks nothing, or may never come
		}
		made, stamp, fresh := d.fsys.listings.Stamps(d.dirKey(), e.Name)
		if !fresh || made != s.made {
			return // listed anew or expired: the next lookup drops the scan
		}
		a := &asked{name: e.Name, index: j, isDir: e.Mode == syscall.S_IFDIR, stamp: stamp, started: d.fsys.now(), done: make(chan struct{})}
		s.ahead[e.Name] = a
		path := upload.Child(dir, e.Name)
		go func() {
			defer close(a.done)
			ctx := context.Background()
			if a.isDir {
				a.dir = d.fsys.askDir(ctx, d.fsys.dirKey(path), true) // listed
			} else {
				a.file, a.fileErr = d.fsys.bucket.Head(ctx, d.fsys.fileKey(path))
			}
		}()
	}
	s.next = j
}
