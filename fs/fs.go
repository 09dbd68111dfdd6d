// Package fs is the go-fuse node tree of ossmount: FUSE operations only,
// delegating staging to cache/ and uploads to upload/. errno.go is the only
// place errors become errnos.
//
// Object keys are derived from each node's place — its parent directory and
// its name (place.go) — so a rename of a directory renames every key below
// it with no bookkeeping.
//
// Lock order: FS.keys, then fileNode.freeze (a rename, holding keys
// exclusively, takes the replaced file's, then the moved file's), then
// fileNode.mu; fileNode.appendMu before freeze; dirNode.mu alone. No mu is
// held across network I/O; freeze is, on purpose: an upload holds it
// exclusively so that it reads a consistent snapshot while writers of that
// one file wait.
package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/cache"
	"github.com/ossmount/ossmount/upload"
)

// Config holds the dependencies and settings of a mounted file system.
type Config struct {
	Bucket   bucket.Bucket
	Uploader *upload.Uploader
	Cache    *cache.Dir
	// Queue, when set, is write-back mode: close journals and queues the
	// upload instead of waiting for it.
	Queue *upload.Queue
	Log   *slog.Logger
	Now   func() time.Time // nil: time.Now

	Prefix          string  // normalized key prefix ("" or ending in "/")
	UID, GID        uint32  // owner of objects without metadata
	Umask           uint32  // applied to the default modes 0666/0777
	RootUmask       *uint32 // the root's (ossfs's mp_umask); nil: Umask
	ForbidOverwrite bool
	// DirRenameLimit is the most objects a directory rename moves (EXDEV
	// above it).
	DirRenameLimit int
	// StatTTL is how long directory listings are trusted to answer
	// lookups (the kernel caches attributes and names as long).
	StatTTL time.Duration
	// MetaHold is how long a metadata change on an uploaded file waits for
	// a rename or upload to carry it; 0: one second.
	MetaHold time.Duration
}

// FS is the state shared by every node of one mount.
type FS struct {
	cfg    Config
	bucket bucket.Bucket
	queue  *upload.Queue // nil in synchronous mode
	log    *slog.Logger
	now    func() time.Time
	root   *dirNode
	// started is the time of a directory without a marker to say when it
	// changed, the root's among them (as mountpoint-s3): not the zero time,
	// the year 1, which tar calls "implausibly old" and ext4 takes as 1901.
	started time.Time
	// listings answers lookups of names a recently listed directory lacks.
	listings *cache.Listings

	// keys is held shared by every operation that turns a node's place
	// into an object key and acts with it, and exclusively by a rename,
	// which changes a place (a directory's, every key below it), until
	// go-fuse has moved the node in its own tree too (afterMove): no key
	// is computed from the old place once the objects are moved, and no
	// lookup runs against a half-done move. An upload or a copy into
	// staging lets it go once it has its key under the file's freeze,
	// which a rename of the file, or of a directory above, waits for:
	// a transfer holds up only the renames that move its file. Lookups
	// and listings let it go while they ask the bucket (keys.go).
	keys sync.RWMutex
	// renames counts the renames that took keys: an answer the bucket
	// gave without them counts only if none ran meanwhile (keyHold).
	renames atomic.Uint64

	heldMu sync.Mutex
	// held are the nodes with metaPending, each with its key when the
	// change was held.
	held     map[metaHolder]string // GUARDED_BY(heldMu)
	applying sync.WaitGroup        // held changes being sent
	// retried counts the failed attempts at a held change still tried
	// again (heldRetries); closing: Shutdown has begun, no more retries.
	retried map[metaHolder]int // GUARDED_BY(heldMu)
	closing bool               // GUARDED_BY(heldMu)

	left leftUploads // left.go
}

// heldRetries bounds the attempts at a held change the server failed, tried
// again after 2, 4 and 8 × MetaHold and at unmount: chmod, chown and
// utimens returned when the change was held, so one failed request must
// not lose it.
const heldRetries = 3

// metaHolder is a node whose metadata changes can be held (fileNode,
// dirNode).
type metaHolder interface {
	// applyHeldMeta sends the held change to the node's object, key.
	applyHeldMeta(ctx context.Context, key string) error
	// takeHeldMeta returns the held change, which is no longer the node's
	// to send.
	takeHeldMeta() (md upload.Metadata, pending bool)
	key() string
	EmbeddedInode() *gofs.Inode
}

// Capabilities are the FUSE capabilities the file system needs beyond
// go-fuse's own. ATOMIC_O_TRUNC: an open with O_TRUNC arrives as one, and
// Open stages the file empty. Without it the kernel sent the open without
// O_TRUNC and a truncate after it, and the open copied the object in
// first — all of it, or a big one's last parts — for the truncate to
// throw away: `cp` over an existing object cost a GET.
const Capabilities = fuse.CAP_ATOMIC_O_TRUNC

// New returns the file system; Root is its root node.
func New(cfg Config) *FS {
	f := &FS{cfg: cfg, bucket: cfg.Bucket, queue: cfg.Queue, log: cfg.Log, now: cfg.Now}
	if f.now == nil {
		f.now = time.Now
	}
	if f.cfg.MetaHold <= 0 {
		f.cfg.MetaHold = time.Second
	}
	if f.cfg.DirRenameLimit <= 0 {
		f.cfg.DirRenameLimit = 1000
	}
	f.held = map[metaHolder]string{}
	f.retried = map[metaHolder]int{}
	f.listings = cache.NewListings(cfg.StatTTL, f.now)
	f.started = f.now()
	f.root = &dirNode{fsys: f, meta: f.defaultMeta(syscall.S_IFDIR, f.started)}
	if cfg.RootUmask != nil {
		f.root.meta.Mode = syscall.S_IFDIR | 0o777&^*cfg.RootUmask
	}
	f.root.placeAt(nil, "")
	return f
}

// Root is the node to mount.
func (f *FS) Root() gofs.InodeEmbedder { return f.root }

// holdMeta schedules n's held metadata to be sent after MetaHold, unless a
// rename, an upload or an fsync carries it first; a node held already
// keeps its schedule. Whether a node is held is this map's to say, not
// its pending flag: a change that failed to apply stays pending, and the
// next change must still be scheduled.
func (f *FS) holdMeta(n metaHolder) {
	key := n.key()
	f.heldMu.Lock()
	defer f.heldMu.Unlock()
	f.holdLocked(n, key, f.cfg.MetaHold)
}

// holdLocked holds n's change for key, to be sent after wait unless n is
// held already. LOCKS_REQUIRED(f.heldMu)
func (f *FS) holdLocked(n metaHolder, key string, wait time.Duration) {
	if _, already := f.held[n]; !already {
		time.AfterFunc(wait, func() { f.applyHeld(context.Background(), n) })
	}
	f.held[n] = key
}

func (f *FS) applyHeld(ctx context.Context, n metaHolder) {
	defer f.usingKeys("a held metadata change")()
	f.heldMu.Lock()
	key, ok := f.held[n]
	if !ok {
		f.heldMu.Unlock()
		return
	}
	delete(f.held, n)
	// Counted while still under heldMu, so that Shutdown, which takes what
	// is left in held, also waits for what has just left it.
	f.applying.Add(1)
	f.heldMu.Unlock()
	defer f.applying.Done()
	// A node the kernel forgot is out of the tree and has no path: it
	// keeps the key it had when the change was held.
	if _, parent := n.EmbeddedInode().Parent(); parent != nil {
		key = n.key()
	}
	err := n.applyHeldMeta(ctx, key)
	f.heldMu.Lock()
	tries := f.retried[n] + 1
	again := err != nil && !f.closing && tries <= heldRetries && !errors.Is(err, bucket.ErrNotFound)
	wait := f.cfg.MetaHold << tries
	delete(f.retried, n)
	if again {
		f.retried[n] = tries
		f.holdLocked(n, key, wait)
	}
	f.heldMu.Unlock()
	switch {
	case again:
		f.log.Warn("metadata change not saved; trying again", "key", key, "in", wait.String(),
			"request_id", bucket.RequestID(err), "err", err)
	case err != nil:
		f.log.Error("metadata change not saved", "key", key, "request_id", bucket.RequestID(err), "err", err)
	}
}

// movedHeld follows a directory rename in the keys of held changes: one
// held by a node the kernel forgets is sent to the key it has then.
func (f *FS) movedHeld(oldPrefix, newPrefix string) {
	f.heldMu.Lock()
	defer f.heldMu.Unlock()
	for n, k := range f.held {
		if rest, ok := strings.CutPrefix(k, oldPrefix); ok {
			f.held[n] = newPrefix + rest
		}
	}
}

// adoptHeld moves a change held by a node the kernel has forgotten to the
// new node n of the same key, which the kernel looked up: the change is
// newer than the bucket's metadata that n was made with, and sent later by
// the forgotten node it would overwrite whatever n does to the object
// meanwhile (a chmod, an upload with n's metadata). It reports whether
// there was one; n's metadata is then md with the adopted change.
func (f *FS) adoptHeld(n metaHolder, key string, md *upload.Metadata) bool {
	f.heldMu.Lock()
	var candidates []metaHolder
	for h, k := range f.held {
		if k == key && h != n {
			candidates = append(candidates, h)
		}
	}
	f.heldMu.Unlock()
	for _, old := range candidates {
		// Outside heldMu: Parent takes the tree's locks.
		if _, parent := old.EmbeddedInode().Parent(); parent != nil {
			continue // still in the tree (the other kind of node)
		}
		f.heldMu.Lock()
		_, still := f.held[old]
		delete(f.held, old)
		f.heldMu.Unlock()
		if !still {
			continue // being sent (applyHeld) or adopted already
		}
		held, pending := old.takeHeldMeta()
		if !pending {
			continue
		}
		typ := md.Mode & syscall.S_IFMT
		*md = held
		md.Mode = typ | held.Mode&0o7777
		return true
	}
	return false
}

// Shutdown releases the handles the kernel did not and sends what is still
// held. Call it after the file system is unmounted.
func (f *FS) Shutdown(ctx context.Context) {
	releaseLost(f.root.EmbeddedInode())
	f.heldMu.Lock()
	f.closing = true
	nodes := make([]metaHolder, 0, len(f.held))
	for n := range f.held {
		nodes = append(nodes, n)
	}
	f.heldMu.Unlock()
	for _, n := range nodes {
		f.applyHeld(ctx, n)
	}
	f.applying.Wait()
	f.uploadLeft(ctx)
}

// releaseLost walks the tree below in (fileNode.releaseLost).
func releaseLost(in *gofs.Inode) {
	for _, child := range in.Children() {
		if n, ok := child.Operations().(*fileNode); ok {
			n.releaseLost()
		} else {
			releaseLost(child)
		}
	}
}

// replaceMeta sets md on the object key (of size bytes) with a copy onto
// itself (x-oss-metadata-directive: REPLACE).
func (f *FS) replaceMeta(ctx context.Context, key string, size int64, md upload.Metadata) error {
	return f.bucket.Copy(ctx, f.copyWithMeta(key, key, size, md))
}

// copyWithMeta is the copy of src (of size bytes) to dst that gives dst a
// file's metadata md, and the attributes that follow dst's name (its
// Content-Type), instead of src's.
func (f *FS) copyWithMeta(src, dst string, size int64, md upload.Metadata) bucket.CopyRequest {
	attrs := f.cfg.Uploader.Attrs(dst, md, "")
	return bucket.CopyRequest{Src: src, Dst: dst, Size: size, Attrs: &attrs}
}

// defaultMeta is the metadata of an object that carries none.
func (f *FS) defaultMeta(typ uint32, mtime time.Time) upload.Metadata {
	perm := uint32(0o666)
	if typ == syscall.S_IFDIR {
		perm = 0o777
	}
	return upload.Metadata{Mode: typ | perm&^f.cfg.Umask, UID: f.cfg.UID, GID: f.cfg.GID, Mtime: mtime}
}

// callerMeta is the metadata of a new node created by the caller of ctx.
func (f *FS) callerMeta(ctx context.Context, typ, mode uint32) upload.Metadata {
	md := upload.Metadata{Mode: typ | mode&0o7777, UID: f.cfg.UID, GID: f.cfg.GID, Mtime: f.now()}
	if caller, ok := fuse.FromContext(ctx); ok {
		md.UID, md.GID = caller.Uid, caller.Gid
	}
	md.Ctime = md.Mtime
	return md
}

// uninterrupted returns ctx without its cancellation; every operation that
// talks to the bucket starts with it. The kernel interrupts a request
// whenever the calling thread gets a signal it catches — Go programs get
// SIGURG all the time, rsync SIGCHLD — and the program then sees EINTR even
// where a local file system never returns it: a close failing though its
// upload could go on, a rename left with its copy done and its delete not,
// a stat or open failing. So requests finish, as on a local disk (gcsfuse's
// ignore-interrupts does the same); a fatal signal still ends the program
// at once, and the request completes behind it.
func uninterrupted(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

// getResuming opens length bytes of key at off, of the version whose ETag
// is ifMatch if set; a body broken in the middle is asked for again from
// where it stopped (bucket.GetResuming).
func (f *FS) getResuming(ctx context.Context, key string, off, length int64, ifMatch string) (bucket.Body, error) {
	req := bucket.GetRequest{Key: key, Off: off, Length: length, IfMatch: ifMatch}
	return bucket.GetResuming(ctx, f.bucket, req, streamRetries, func(at int64, err error) {
		f.log.Warn("a download broke; asking for the rest", "key", key, "offset", at, "err", err)
	})
}

// fileKey and dirKey are the object keys of a path.
func (f *FS) fileKey(path string) string { return upload.Key(f.cfg.Prefix, path) }
func (f *FS) dirKey(path string) string  { return upload.DirKey(f.cfg.Prefix, path) }

// checkNewName applies the name rules to a new entry and logs a refusal.
func (f *FS) checkNewName(op, key string) syscall.Errno {
	if err := upload.ValidateKey(key); err != nil {
		f.log.Warn(fmt.Sprintf("%s %q: refusing a name that breaks OSS rules", op, key), "err", err)
		return errnoOf(err)
	}
	return 0
}

// fillAttr writes md and size into a FUSE attribute.
func fillAttr(out *fuse.Attr, md upload.Metadata, size int64) {
	out.Mode = md.Mode
	out.Size = uint64(size)
	out.Blocks = (uint64(size) + 511) / 512
	out.Blksize = 1 << 20
	// 1 for a directory too, which fts (find, du) takes as "count
	// unknown": 2 would say it has no subdirectories, and gnulib's fts
	// trusts that on FUSE. It was 2 from getattr and 1 from lookup.
	out.Nlink = 1
	out.Uid, out.Gid = md.UID, md.GID
	out.Rdev = md.Rdev
	mtime := md.Mtime
	ctime := md.Ctime
	if ctime.IsZero() {
		ctime = mtime
	}
	atime := md.Atime
	if atime.IsZero() {
		atime = mtime
	}
	out.SetTimes(&atime, &mtime, &ctime)
}

// withinTTL reports whether t, when the mount last knew the bucket to
// match a node, is less than stat_ttl ago.
func (f *FS) withinTTL(t time.Time) bool {
	return !t.IsZero() && f.now().Sub(t) < f.cfg.StatTTL
}

// putDirMarker writes a directory's marker (mkdir, or its metadata
// changed): at once, or in write-back mode journaled and queued like a
// closed file — else copying a tree waits for a PUT per directory, behind
// the queue's own uploads.
func (f *FS) putDirMarker(ctx context.Context, key string, md upload.Metadata) error {
	if f.queue == nil {
		return f.cfg.Uploader.PutDirMarker(ctx, key, md)
	}
	if err := upload.ValidateKey(key); err != nil {
		return err // not journaled: it could never be uploaded
	}
	// A marker still queued carries older metadata: this one replaces it,
	// unless it cannot be queued.
	return f.removing(ctx, key, func(bool) error { return f.queueDirMarker(key, md) })
}

func (f *FS) queueDirMarker(key string, md upload.Metadata) error {
	st, err := f.cfg.Cache.NewStaging()
	if err != nil {
		return err
	}
	rec := cache.Record{ID: cache.NewRecordID(), Key: key, File: st.Name(), Meta: md.Encode()}
	if err := f.queue.Submit(rec, st, nil); err != nil {
		st.Remove()
		return err
	}
	return nil
}
