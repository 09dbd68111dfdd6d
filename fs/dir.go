package fs

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/upload"
)

// dirNode is a directory: a marker object "dir/", or just a prefix that
// other keys share.
type dirNode struct {
	gofs.Inode
	noXattrs
	placed
	fsys *FS

	mu   sync.Mutex
	meta upload.Metadata // GUARDED_BY(mu)
	// metaPending: meta changed and not written to the marker yet (held
	// like a file's, so that chmod and utimens in a row cost one PUT).
	metaPending bool // GUARDED_BY(mu)
	removed     bool // GUARDED_BY(mu); rmdir'd: never write the marker again
	// emptiedHere: this mount removed an entry from the directory. One
	// without a marker (a prefix other tools wrote) stops existing in the
	// bucket with its last object; for this mount it stays, empty, until
	// rmdir — rm -r's rmdir, after stat_ttl, found it gone (ENOENT).
	emptiedHere bool // GUARDED_BY(mu)
	// confirmed is when this mount last made or found the directory (see
	// fileNode.confirmed).
	confirmed time.Time // GUARDED_BY(mu)
	// Lookups without a fresh listing since unlistedSince, and whether the
	// directory is too big to list on demand (prefetch.go).
	unlisted      int       // GUARDED_BY(mu)
	unlistedSince time.Time // GUARDED_BY(mu)
	tooBig        bool      // GUARDED_BY(mu)
	// walkedAt is when a program walking the parent looked the directory
	// up (prefetch.go: wantsListing).
	walkedAt time.Time // GUARDED_BY(mu)

	scan scan // the kernel's lookups through the last listing (prefetch.go)
}

var (
	_ = (gofs.NodeLookuper)((*dirNode)(nil))
	_ = (gofs.NodeOpendirHandler)((*dirNode)(nil))
	_ = (gofs.NodeGetattrer)((*dirNode)(nil))
	_ = (gofs.NodeSetattrer)((*dirNode)(nil))
	_ = (gofs.NodeCreater)((*dirNode)(nil))
	_ = (gofs.NodeMkdirer)((*dirNode)(nil))
	_ = (gofs.NodeUnlinker)((*dirNode)(nil))
	_ = (gofs.NodeRmdirer)((*dirNode)(nil))
	_ = (gofs.NodeLinker)((*dirNode)(nil))
	_ = (gofs.NodeStatfser)((*dirNode)(nil))
	_ = (gofs.NodeSymlinker)((*dirNode)(nil))
	_ = (gofs.NodeMknoder)((*dirNode)(nil))
	_ = (gofs.NodeRenamer)((*dirNode)(nil))
	_ = (gofs.NodeFsyncer)((*dirNode)(nil))
)

func (d *dirNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.mu.Lock()
	defer d.mu.Unlock()
	fillAttr(&out.Attr, d.meta, 0)
	return 0
}

// Setattr keeps a directory's mode, owner and times in its marker, which
// is written anew (created for a directory that had none) after a moment.
func (d *dirNode) Setattr(ctx context.Context, _ gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	d.mu.Lock()
	changed := applySetattr(&d.meta, in, d.fsys.now())
	hold := changed && d != d.fsys.root
	d.metaPending = d.metaPending || hold
	fillAttr(&out.Attr, d.meta, 0)
	d.mu.Unlock()
	if hold {
		d.fsys.holdMeta(d)
	}
	return 0
}

func (d *dirNode) key() string { return d.dirKey() }

func (d *dirNode) takeHeldMeta() (upload.Metadata, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	pending := d.metaPending && !d.removed
	d.metaPending = false
	return d.meta, pending
}

// applyHeldMeta writes the marker with the held metadata.
func (d *dirNode) applyHeldMeta(ctx context.Context, key string) error {
	d.mu.Lock()
	pending, md := d.metaPending && !d.removed, d.meta
	d.metaPending = false
	d.mu.Unlock()
	if !pending {
		return nil
	}
	err := d.fsys.putDirMarker(ctx, key, md)
	if err != nil {
		d.mu.Lock()
		d.metaPending = !d.removed // tried again (FS.applyHeld)
		d.mu.Unlock()
	}
	return err
}

func (d *dirNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	// Object storage has no fixed size: report a large, mostly free volume
	// so that tools checking free space go ahead.
	const blocks = 1 << 40
	out.Bsize, out.Frsize = 4096, 4096
	out.Blocks, out.Bfree, out.Bavail = blocks, blocks, blocks
	out.Files, out.Ffree = 1<<30, 1<<30
	out.NameLen = 1023
	return 0
}

// lookupReturning, set by tests only, runs when a lookup has let go of the
// keys and is about to hand its node to go-fuse, which adds it to its tree
// after Lookup returns.
var lookupReturning func(parent *dirNode, name string, found *gofs.Inode)

func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ch, errno := d.lookup(ctx, name, out)
	if lookupReturning != nil {
		lookupReturning(d, name, ch)
	}
	return ch, errno
}

func (d *dirNode) lookup(ctx context.Context, name string, out *fuse.EntryOut) (ch *gofs.Inode, errno syscall.Errno) {
	ctx = uninterrupted(ctx)
	keys := d.fsys.holdKeys("a lookup")
	defer keys.letGo()
	keys.retry(func() (renamed bool) {
		ch, errno, renamed = d.lookupOnce(ctx, name, out, keys)
		return renamed
	})
	if errno == syscall.ENOENT {
		// Gone from the bucket, it may still be a directory this mount
		// emptied.
		if kept := d.emptiedChild(name, out); kept != nil {
			return kept, 0
		}
	}
	return ch, errno
}

// lookupOnce finds name, holding keys except while it asks the bucket;
// renamed says a rename ran meanwhile and the answer is void.
func (d *dirNode) lookupOnce(ctx context.Context, name string, out *fuse.EntryOut, keys *keyHold) (_ *gofs.Inode, _ syscall.Errno, renamed bool) {
	path := upload.Child(d.path(), name)
	key := d.fsys.fileKey(path)
	if upload.ValidateKey(key) != nil {
		return nil, syscall.ENOENT, false
	}
	// A file with local state (staged, dirty) is what the bucket will hold:
	// it wins over what the bucket holds now.
	if ch := d.child(name); ch != nil {
		if fn, ok := ch.Operations().(*fileNode); ok && fn.isLocal() {
			fn.fillEntry(out)
			return ch, 0, false
		}
	}
	known, exists, isDir, stale := d.fsys.listings.Lookup(d.dirKey(), name)
	var early *earlyHead
	if !known {
		pages := d.wantsListing()
		if stale >= 0 && stale < listPageSize {
			// A small directory in use: listed again, one request, as a
			// lookup by name would cost. (A large one was listed again
			// whole: 20 requests for one name in 20,000 entries, every
			// stat_ttl.)
			pages = listOnDemandPages
		}
		if pages > 0 {
			// Listed on demand (prefetch.go); if that fails, the name is
			// asked for alone, and that request's failure is the lookup's.
			early = d.headWithListing(ctx, name, key)
			_, errno, renamed, complete := d.list(ctx, keys, pages)
			if renamed {
				return nil, 0, true
			}
			if errno == 0 && !complete && pages == listOnDemandPages {
				d.setTooBig(true)
			}
			known, exists, isDir, _ = d.fsys.listings.Lookup(d.dirKey(), name)
		}
	}
	if known && !exists {
		return nil, syscall.ENOENT, false
	}
	ahead := d.lookingUp(name)
	if ch := d.freshChild(name, known, isDir, out); ch != nil {
		return ch, 0, false
	}
	if known && isDir {
		return d.lookupDir(ctx, name, d.fsys.dirKey(path), out, keys, ahead, true)
	}
	if ch := d.queuedChild(ctx, name, key, out); ch != nil {
		return ch, 0, false
	}
	var info bucket.ObjectInfo
	var err error
	if a := ahead.answer(ctx, d, false); a != nil {
		info, err = a.file, a.fileErr
	} else if keys.around(func() { info, err = early.result(ctx, d.fsys.bucket, key) }) {
		return nil, 0, true
	}
	if err == nil {
		return d.fileChild(ctx, name, info, out), 0, false
	}
	if !errors.Is(err, bucket.ErrNotFound) {
		// A failed HEAD must never make an existing object look absent.
		return nil, d.fsys.fail("lookup", key, err), false
	}
	return d.lookupDir(ctx, name, d.fsys.dirKey(path), out, keys, nil, false)
}

// earlyHead is a lookup's HEAD of a file sent beside the listing the
// lookup waits for, for its answer after it.
type earlyHead struct {
	done chan struct{}
	info bucket.ObjectInfo
	err  error
}

// headWithListing sends the HEAD that the lookup of name, a file this
// mount knows but not fresh (a directory in use, its list expired), will
// send once the listing is in: one round trip instead of two. It is the
// lookup's own request, only sooner: sent while the lookup holds the keys,
// its answer is taken only if no rename ran until it came (keys.around
// over the listing, and over the wait). Nil when there is none to send.
func (d *dirNode) headWithListing(ctx context.Context, name, key string) *earlyHead {
	ch := d.child(name)
	if ch == nil {
		return nil
	}
	if fn, ok := ch.Operations().(*fileNode); !ok || fn.fresh() {
		return nil
	}
	h := &earlyHead{done: make(chan struct{})}
	go func() {
		defer close(h.done)
		h.info, h.err = d.fsys.bucket.Head(ctx, key)
	}()
	return h
}

// result is the answer of the HEAD of key sent early, or of one sent now
// if none was (h nil).
func (h *earlyHead) result(ctx context.Context, b bucket.Bucket, key string) (bucket.ObjectInfo, error) {
	if h == nil {
		return b.Head(ctx, key)
	}
	select {
	case <-h.done:
		return h.info, h.err
	case <-ctx.Done():
		return bucket.ObjectInfo{}, ctx.Err()
	}
}

// freshChild returns the node of name if this mount made or found it in
// the bucket less than stat_ttl ago and a known listing (known, isDir)
// agrees: the lookup asks nothing. `ls -l` looks up every entry
// (READDIRPLUS), even those the kernel has cached; right after a copy that
// was a HEAD per file and a listing and a HEAD per directory. Other
// clients' changes show after the TTL, as with the listings.
func (d *dirNode) freshChild(name string, known, isDir bool, out *fuse.EntryOut) *gofs.Inode {
	ch := d.child(name)
	if ch == nil {
		return nil
	}
	n, ok := ch.Operations().(freshNode)
	_, childIsDir := n.(*dirNode)
	if !ok || (known && isDir != childIsDir) || !n.fresh() {
		return nil
	}
	n.fillEntry(out)
	return ch
}

// freshNode is a file or directory node that knows when it last matched
// the bucket.
type freshNode interface {
	fresh() bool
	fillEntry(out *fuse.EntryOut)
}

// fresh reports whether this mount made or found the directory less than
// stat_ttl ago.
func (d *dirNode) fresh() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.removed && d.fsys.withinTTL(d.confirmed)
}

func (d *dirNode) fillEntry(out *fuse.EntryOut) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fillAttr(&out.Attr, d.meta, 0)
}

// queuedChild returns a node for a file whose upload is still queued
// although the kernel forgot its node: the queued content, not the
// bucket's older version (or nothing), is what the file holds.
func (d *dirNode) queuedChild(ctx context.Context, name, key string, out *fuse.EntryOut) *gofs.Inode {
	if d.fsys.queue == nil {
		return nil
	}
	fn := &fileNode{fsys: d.fsys}
	rec, st, ok := d.fsys.queue.Adopt(key, fn.queuedDone)
	if !ok {
		return nil
	}
	fn.size, fn.staging, fn.sealed, fn.wbID = rec.Size, st, true, rec.ID
	fn.meta = upload.DecodeMetadata(rec.Meta, d.fsys.defaultMeta(syscall.S_IFREG, d.fsys.now()))
	fn.fillEntry(out)
	return d.newChild(ctx, name, fn, syscall.S_IFREG)
}

// dirKey is the directory's key prefix.
func (d *dirNode) dirKey() string { return d.fsys.dirKey(d.path()) }

// lookupDir finds a directory: its marker (with metadata), or else any key
// below it — or, listed in d's fresh listing, its marker or nothing. As
// lookupOnce, it lets the keys go while it asks the bucket, unless the
// answer was asked ahead (prefetch.go).
func (d *dirNode) lookupDir(ctx context.Context, name, dirKey string, out *fuse.EntryOut, keys *keyHold, ahead *asked, listed bool) (_ *gofs.Inode, _ syscall.Errno, renamed bool) {
	if upload.ValidateKey(dirKey) != nil {
		return nil, syscall.ENOENT, false // its marker could not exist
	}
	var a dirAnswer
	got := ahead.answer(ctx, d, true)
	if got != nil {
		a = got.dir
	} else if keys.around(func() { a = d.fsys.askDir(ctx, dirKey, listed) }) {
		return nil, 0, true
	}
	switch {
	case a.listErr != nil:
		return nil, d.fsys.fail("lookup", dirKey, a.listErr), false
	case a.listed && !a.hasMarker:
		// Listed without a marker: its queued marker's metadata if the
		// write-back queue holds one, else a directory other keys imply.
		if ch, errno := d.queuedDir(ctx, name, dirKey, out); errno == 0 {
			return ch, 0, false
		}
	case !a.listed && len(a.page.Objects) == 0 && len(a.page.Prefixes) == 0:
		ch, errno := d.queuedDir(ctx, name, dirKey, out)
		return ch, errno, false
	}
	md := d.fsys.defaultMeta(syscall.S_IFDIR, d.fsys.started)
	if a.hasMarker {
		switch {
		case a.headErr == nil:
			md = upload.DecodeMetadata(a.marker.Meta, d.fsys.defaultMeta(syscall.S_IFDIR, a.marker.LastModified))
			md.Mode = syscall.S_IFDIR | md.Mode&0o7777
		case !errors.Is(a.headErr, bucket.ErrNotFound):
			return nil, d.fsys.fail("lookup", dirKey, a.headErr), false
		}
	}
	ch := d.dirChild(ctx, name, md, out)
	if got != nil {
		ch.Operations().(*dirNode).walked()
	}
	return ch, 0, false
}

// queuedDir finds a directory of which only the write-back queue knows:
// its marker, or files below it, are not uploaded yet.
func (d *dirNode) queuedDir(ctx context.Context, name, dirKey string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if d.fsys.queue == nil || !d.fsys.queue.HasPrefix(dirKey) {
		return nil, syscall.ENOENT
	}
	md := d.fsys.defaultMeta(syscall.S_IFDIR, d.fsys.now())
	if rec, ok := d.fsys.queue.Queued(dirKey); ok {
		md = upload.DecodeMetadata(rec.Meta, md)
		md.Mode = syscall.S_IFDIR | md.Mode&0o7777
	}
	return d.dirChild(ctx, name, md, out), 0
}

// entryRemoved records that this mount removed name (a directory or not)
// from d: in its listing, and for emptiedChild.
func (d *dirNode) entryRemoved(name string, isDir bool) {
	d.fsys.listings.Remove(d.dirKey(), name, isDir)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.emptiedHere = true
}

// emptiedChild returns the node of the directory name if this mount
// removed entries from it and has not removed it, whatever the bucket
// holds below it: a directory lasts until rmdir (see emptiedHere).
func (d *dirNode) emptiedChild(name string, out *fuse.EntryOut) *gofs.Inode {
	ch := d.child(name)
	if ch == nil {
		return nil
	}
	dn, ok := ch.Operations().(*dirNode)
	if !ok {
		return nil
	}
	dn.mu.Lock()
	kept := dn.emptiedHere && !dn.removed
	dn.mu.Unlock()
	if !kept {
		return nil
	}
	if out != nil {
		dn.fillEntry(out)
	}
	return ch
}

// fileChild returns the inode for an object, reusing the existing one.
func (d *dirNode) fileChild(ctx context.Context, name string, info bucket.ObjectInfo, out *fuse.EntryOut) *gofs.Inode {
	md := upload.DecodeMetadata(info.Meta, d.fsys.defaultMeta(syscall.S_IFREG, info.LastModified))
	if isSpecial(md.Mode) {
		return d.specialChild(ctx, name, md, info.Size, out)
	}
	md.Mode = syscall.S_IFREG | md.Mode&0o7777
	if ch := d.child(name); ch != nil {
		if fn, ok := ch.Operations().(*fileNode); ok {
			fn.refresh(info.Size, md, info.ETag)
			fn.fillEntry(out)
			return ch
		}
	}
	fn := &fileNode{fsys: d.fsys, size: info.Size, meta: md, etag: info.ETag, etagSeen: d.fsys.now()}
	fn.confirmLocked() // not shared yet
	fn.metaPending = d.fsys.adoptHeld(fn, d.fsys.fileKey(upload.Child(d.path(), name)), &fn.meta)
	fn.fillEntry(out)
	ch := d.newChild(ctx, name, fn, syscall.S_IFREG)
	if fn.metaPending {
		d.fsys.holdMeta(fn)
	}
	return ch
}

// dirChild returns the inode for a directory, reusing the existing one.
func (d *dirNode) dirChild(ctx context.Context, name string, md upload.Metadata, out *fuse.EntryOut) *gofs.Inode {
	if ch := d.child(name); ch != nil {
		if dn, ok := ch.Operations().(*dirNode); ok {
			dn.mu.Lock()
			dn.confirmed = d.fsys.now()
			fillAttr(&out.Attr, dn.meta, 0)
			dn.mu.Unlock()
			return ch
		}
	}
	dn := &dirNode{fsys: d.fsys, meta: md, confirmed: d.fsys.now()}
	dn.metaPending = d.fsys.adoptHeld(dn, d.fsys.dirKey(upload.Child(d.path(), name)), &dn.meta)
	fillAttr(&out.Attr, dn.meta, 0)
	ch := d.newChild(ctx, name, dn, syscall.S_IFDIR)
	if dn.metaPending {
		d.fsys.holdMeta(dn)
	}
	return ch
}

// specialChild returns the inode for a symlink or special file object,
// reusing the existing one if it is of the same type.
func (d *dirNode) specialChild(ctx context.Context, name string, md upload.Metadata, size int64, out *fuse.EntryOut) *gofs.Inode {
	fillAttr(&out.Attr, md, size)
	if ch := d.child(name); ch != nil {
		if sn, ok := ch.Operations().(*specialNode); ok && ch.StableAttr().Mode == md.Mode&syscall.S_IFMT {
			sn.mu.Lock()
			sn.meta, sn.size = md, size
			sn.mu.Unlock()
			return ch
		}
	}
	return d.newChild(ctx, name, &specialNode{fsys: d.fsys, meta: md, size: size}, md.Mode&syscall.S_IFMT)
}

// isEntryName reports whether a name a listing gives (a key less the
// directory's prefix, up to the next "/") can be a directory entry. Keys
// such as "a//b", "a/./b" or "a/../b" are legal in OSS but name nothing a
// path can reach: "", "." and ".." would be listed as bogus entries (a
// second "." and ".."), so they are left out, as s3fs does; so is a name
// with a NUL, which a directory entry cannot hold.
func isEntryName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}

// list reads the directory's entries from the bucket, merged with files
// not uploaded yet, and records them in the listing cache. It lets the keys
// go while it lists the bucket — a large directory takes a request per
// thousand entries, and a rename, with every operation behind it, would
// wait for them all; renamed says a rename ran meanwhile, and then the
// listing is not cached (the rename may have moved the prefix: the cache
// would describe the new directory made under the old name). With
// maxPages > 0 it stops after that many pages of the bucket's listing, and
// complete is false: nothing is returned or cached.
func (d *dirNode) list(ctx context.Context, keys *keyHold, maxPages int) (_ []fuse.DirEntry, _ syscall.Errno, renamed, complete bool) {
	prefix := d.dirKey()
	modes := map[string]uint32{}
	var names []string
	add := func(name string, mode uint32) {
		if !isEntryName(name) {
			return
		}
		if _, ok := modes[name]; !ok {
			names = append(names, name)
		}
		if _, ok := modes[name]; !ok || mode == syscall.S_IFDIR {
			modes[name] = mode
		}
	}
	// In the order a file moves from one to the next — being written,
	// queued, in the bucket — so that one moving on while this lists is
	// seen in the next place it is looked for (as checkEmpty does).
	// Files being written are listed before their first upload.
	for name, ch := range d.children() {
		if fn, ok := ch.Operations().(*fileNode); ok && fn.isLocal() {
			add(name, syscall.S_IFREG)
		}
		if d.emptiedChild(name, nil) != nil {
			add(name, syscall.S_IFDIR)
		}
	}
	// Files and directories queued for upload are listed before it.
	if d.fsys.queue != nil {
		for _, key := range d.fsys.queue.Keys(prefix) {
			name, _, below := strings.Cut(strings.TrimPrefix(key, prefix), "/")
			if below {
				add(name, syscall.S_IFDIR)
			} else {
				add(name, syscall.S_IFREG)
			}
		}
	}
	var err error
	complete = true
	pages := 0
	renamed = keys.around(func() {
		token := ""
		for pages = 1; ; pages++ {
			var page bucket.ListPage
			page, err = d.fsys.bucket.List(ctx, bucket.ListRequest{Prefix: prefix, Delimiter: "/", ContinuationToken: token, MaxKeys: listPageSize})
			if err != nil {
				return
			}
			for _, o := range page.Objects {
				name := strings.TrimPrefix(o.Key, prefix)
				add(name, listedType(o.Size))
				if ch := d.child(name); ch != nil {
					if fn, ok := ch.Operations().(*fileNode); ok {
						fn.listedAs(o.Size, o.ETag)
					}
				}
			}
			for _, p := range page.Prefixes {
				add(strings.TrimSuffix(strings.TrimPrefix(p, prefix), "/"), syscall.S_IFDIR)
			}
			if token = page.NextToken; token == "" {
				return
			}
			if pages == maxPages {
				complete = false
				return
			}
		}
	})
	if err != nil {
		return nil, d.fsys.fail("list", prefix, err), renamed, false
	}
	if !complete {
		return nil, 0, renamed, false
	}
	if pages <= listOnDemandPages {
		d.setTooBig(false) // small enough again to list on demand
	}
	// In name order, files and directories together, as programs that
	// stat what they list go (rsync, a sorted walk): the bucket lists a
	// page's objects before its prefixes, and a scan that followed that
	// order lost its place at every directory (prefetch.go).
	slices.Sort(names)
	entries := make([]fuse.DirEntry, 0, len(names))
	listed := make(map[string]bool, len(names))
	for _, name := range names {
		entries = append(entries, fuse.DirEntry{Name: name, Mode: modes[name]})
		listed[name] = modes[name] == syscall.S_IFDIR
	}
	if !renamed {
		d.fsys.listings.Put(prefix, listed)
	}
	d.listed(entries)
	return entries, 0, renamed, true
}

func (d *dirNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	ctx = uninterrupted(ctx)
	defer d.fsys.usingKeys("a create")()
	key := d.fsys.fileKey(upload.Child(d.path(), name))
	if errno := d.fsys.checkNewName("create", key); errno != 0 {
		return nil, nil, 0, errno
	}
	if d.fsys.cfg.ForbidOverwrite {
		_, err := d.fsys.bucket.Head(ctx, key)
		if err == nil {
			return nil, nil, 0, syscall.EEXIST
		}
		if !errors.Is(err, bucket.ErrNotFound) {
			return nil, nil, 0, d.fsys.fail("create", key, err)
		}
	}
	st, err := d.fsys.cfg.Cache.NewStaging()
	if err != nil {
		return nil, nil, 0, d.fsys.fail("create", key, err)
	}
	// Create sends nothing: the first flush uploads, even an empty file.
	fn := &fileNode{fsys: d.fsys, meta: d.fsys.callerMeta(ctx, syscall.S_IFREG, mode), staging: st, dirty: true, emptyPending: true, streamable: true, handles: 1}
	fn.fillEntry(out)
	ch := d.newChild(ctx, name, fn, syscall.S_IFREG)
	d.fsys.listings.Add(d.dirKey(), name, false)
	return ch, &fileHandle{node: fn, append: flags&syscall.O_APPEND != 0}, openFlags(flags), 0
}

func (d *dirNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ctx = uninterrupted(ctx)
	defer d.fsys.usingKeys("a mkdir")()
	key := d.fsys.dirKey(upload.Child(d.path(), name))
	if errno := d.fsys.checkNewName("mkdir", key); errno != 0 {
		return nil, errno
	}
	md := d.fsys.callerMeta(ctx, syscall.S_IFDIR, mode)
	if err := d.fsys.putDirMarker(ctx, key, md); err != nil {
		return nil, d.fsys.fail("mkdir", key, err)
	}
	dn := &dirNode{fsys: d.fsys, meta: md, confirmed: d.fsys.now()}
	fillAttr(&out.Attr, md, 0)
	d.fsys.listings.Add(d.dirKey(), name, true)
	// The lookup before mkdir found nothing below key, so the directory is
	// empty (unless another client writes there meanwhile): lookups in it
	// need no requests for a while.
	d.fsys.listings.Put(key, nil)
	return d.newChild(ctx, name, dn, syscall.S_IFDIR), 0
}

func (d *dirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	ctx = uninterrupted(ctx)
	defer d.fsys.usingKeys("an unlink")()
	key := d.fsys.fileKey(upload.Child(d.path(), name))
	ch := d.child(name)
	var fn *fileNode
	if ch != nil {
		fn, _ = ch.Operations().(*fileNode)
	}
	if fn != nil {
		if err := fn.holdForRemoval(ctx); err != nil {
			return d.fsys.fail("unlink", key, err)
		}
		defer fn.freeze.Unlock()
	}
	// The file's queued uploads, and those of a node no longer in the tree.
	err := d.fsys.removing(ctx, key, func(ran bool) error {
		inBucket := true
		if fn != nil {
			fn.mu.Lock()
			inBucket = fn.inBucket || ran
			fn.mu.Unlock()
		}
		// A file made here and never uploaded has no object to delete.
		if !inBucket {
			return nil
		}
		return d.fsys.bucket.Delete(ctx, key)
	})
	if err != nil {
		return d.fsys.fail("unlink", key, err)
	}
	d.entryRemoved(name, false)
	d.fsys.cfg.Cache.DropKept(key)
	if ch != nil {
		if fn != nil {
			fn.forget()
		}
		ch.Operations().(placedNode).unplace()
	}
	return 0
}

func (d *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	ctx = uninterrupted(ctx)
	defer d.fsys.usingKeys("an rmdir")()
	if errno := d.checkEmpty(ctx, name); errno != 0 {
		return errno
	}
	key := d.fsys.dirKey(upload.Child(d.path(), name))
	// With a marker not uploaded yet held.
	err := d.fsys.removing(ctx, key, func(bool) error { return d.fsys.bucket.Delete(ctx, key) })
	if err != nil {
		return d.fsys.fail("rmdir", key, err)
	}
	d.entryRemoved(name, true)
	d.fsys.listings.ForgetBelow(key)
	if ch := d.child(name); ch != nil {
		if dn, ok := ch.Operations().(*dirNode); ok {
			dn.mu.Lock()
			dn.removed = true
			dn.mu.Unlock()
		}
		ch.Operations().(placedNode).unplace()
	}
	return 0
}

// Fsync of a directory (fsync(2) on it, `sync DIR`) makes its entries
// durable: it returns once what lies below is in the bucket — in
// write-back mode it waits for the queued uploads under the directory's
// prefix, files and markers, and returns the error of one that failed —
// and it writes the directory's own held metadata. A file still open and
// dirty has no entry yet: its own close or fsync uploads it. Programs that
// save a file atomically fsync its directory after the rename, and treat
// go-fuse's answer for a node without Fsync, EOPNOTSUPP, as a failure.
func (d *dirNode) Fsync(ctx context.Context, _ gofs.FileHandle, _ uint32) syscall.Errno {
	ctx = uninterrupted(ctx)
	release := d.fsys.usingKeys("an fsync of a directory")
	prefix := d.dirKey()
	var err error
	if d != d.fsys.root {
		// First: in write-back mode the marker it writes is queued.
		err = d.applyHeldMeta(ctx, prefix) // the marker's key
	}
	release()
	// Not holding keys while the queue works: a queued job follows renames.
	if err == nil && d.fsys.queue != nil {
		err = d.fsys.queue.WaitPrefix(ctx, prefix)
	}
	if err != nil {
		return d.fsys.fail("fsync", prefix, err)
	}
	return 0
}

// Link: OSS has no hard links.
func (d *dirNode) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.ENOTSUP
}

// applySetattr copies the mode, owner and times of a setattr into md.
func applySetattr(md *upload.Metadata, in *fuse.SetAttrIn, now time.Time) (changed bool) {
	if m, ok := in.GetMode(); ok {
		md.Mode = md.Mode&syscall.S_IFMT | m&0o7777
		changed = true
	}
	if uid, ok := in.GetUID(); ok {
		md.UID = uid
		changed = true
	}
	if gid, ok := in.GetGID(); ok {
		md.GID = gid
		changed = true
	}
	if t, ok := in.GetMTime(); ok {
		md.Mtime = t
		changed = true
	}
	if t, ok := in.GetATime(); ok {
		md.Atime = t
	}
	if changed {
		md.Ctime = now
	}
	return changed
}
