package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/cache"
	"github.com/ossmount/ossmount/upload"
)

// fileNode is a regular file: an object, and while it is open for writing,
// a staging file shared by all its handles.
type fileNode struct {
	gofs.Inode
	noXattrs
	placed
	fsys *FS

	// freeze is held shared by writers and exclusively by whatever must see
	// the staged content stand still: an upload, filling staging.
	freeze sync.RWMutex
	// appendMu serializes O_APPEND writers (taken before freeze).
	appendMu sync.Mutex

	mu      sync.Mutex
	meta    upload.Metadata // GUARDED_BY(mu)
	size    int64           // GUARDED_BY(mu)
	staging *cache.Staging  // GUARDED_BY(mu); nil when not staged
	// dirty: staging holds content the bucket does not have yet.
	// INVARIANT: dirty implies staging != nil.
	dirty bool // GUARDED_BY(mu)
	// emptyPending: dirty only because the file was created or opened with
	// O_TRUNC, and nothing written since. Flush leaves such a file to
	// Release: a shell redirection closes a dup of the descriptor before
	// anything is written, and that close must not upload an empty object
	// that the real content replaces a moment later.
	emptyPending bool // GUARDED_BY(mu)
	// metaPending: meta changed on a clean file and is not in the bucket
	// yet; it is held for a moment (FS.holdMeta) to ride along with a
	// rename's copy or an upload.
	metaPending bool // GUARDED_BY(mu)
	// streamable: everything staged was written in order from an empty
	// file (gaps left by writes past the end read as zeros), so parts can
	// be uploaded while it is written (stream).
	streamable bool           // GUARDED_BY(mu)
	stream     *upload.Stream // GUARDED_BY(mu); nil until the first part is due
	// Write-back mode (writeback.go): wbID names the queue item of this
	// file; sealed says staging belongs to a queued upload and must be
	// copied before it changes.
	wbID     string // GUARDED_BY(mu)
	sealed   bool   // GUARDED_BY(mu)
	inBucket bool   // GUARDED_BY(mu); an object exists at the current key
	// confirmed is when the bucket last matched size and meta, as far as
	// this mount knows: its upload, or a HEAD (see fresh).
	confirmed time.Time // GUARDED_BY(mu)
	handles   int       // GUARDED_BY(mu); open file handles
	// pins counts operations using the staging file that a handle may not
	// keep (a truncate by path staging it, an upload reading it); it is
	// not dropped meanwhile (pinStaging).
	pins     int  // GUARDED_BY(mu)
	unlinked bool // GUARDED_BY(mu); removed: never upload again
	// absentRead counts the bytes of the start of a staging file staged
	// from its end that reads were served from the object (readAbsent).
	absentRead int64 // GUARDED_BY(mu)
	// rewrites counts the starts and ends of this mount's copies of the
	// object onto itself (a metadata change): each is a new version of the
	// same bytes, which handles pinned to the one before take (readPin).
	rewrites uint64 // GUARDED_BY(mu)
	// copied: the last copy on the server that made the file (copyrange.go).
	copied *serverCopy // GUARDED_BY(mu)
	// etag is the object's version as this mount last saw it (a lookup's
	// HEAD, its own upload); "" when unknown, and while staged. etagSeen
	// is when the bucket last showed it (those, or a listing).
	etag     string    // GUARDED_BY(mu)
	etagSeen time.Time // GUARDED_BY(mu)
	// pages is the version whose bytes the kernel's page cache may hold
	// for the file: that of the reads of the object since the last open
	// that dropped the cache (keepPages), mixedPages if they read two;
	// pagesRead the ranges they read (pages.go).
	pages     readPin    // GUARDED_BY(mu)
	pagesRead pageRanges // GUARDED_BY(mu)
	// putBack: the kernel forgot the node while it held what the bucket
	// lacks, and OnForget put it back in the tree (forgotten.go).
	putBack bool // GUARDED_BY(mu)
}

var (
	_ = (gofs.NodeOpener)((*fileNode)(nil))
	_ = (gofs.NodeGetattrer)((*fileNode)(nil))
	_ = (gofs.NodeOnForgetter)((*fileNode)(nil))
	_ = (gofs.NodeSetattrer)((*fileNode)(nil))
	_ = (gofs.NodeReader)((*fileNode)(nil))
	_ = (gofs.NodeWriter)((*fileNode)(nil))
	_ = (gofs.NodeFlusher)((*fileNode)(nil))
	_ = (gofs.NodeFsyncer)((*fileNode)(nil))
	_ = (gofs.NodeAllocater)((*fileNode)(nil))
)

func (n *fileNode) key() string { return n.fsys.fileKey(n.path()) }

// isLocal reports whether the node has content the bucket may not have.
func (n *fileNode) isLocal() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.localLocked()
}

// localLocked is isLocal. LOCKS_REQUIRED(n.mu)
func (n *fileNode) localLocked() bool { return !n.unlinked && (n.dirty || n.staging != nil) }

// refresh takes the bucket's view of a file that has no local state. A
// metadata change held for a moment, or on its way (metaAheadLocked), is
// newer than that view and stays.
func (n *fileNode) refresh(size int64, md upload.Metadata, etag string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.staging == nil {
		n.size, n.etag, n.etagSeen = size, etag, n.fsys.now()
		if !n.metaAheadLocked() {
			n.meta = md
		}
	}
	n.confirmLocked()
}

// metaAheadLocked reports whether the node's metadata is newer than the
// bucket's: a change held (metaPending), or being copied onto the object
// (rewrites is odd) — a lookup's HEAD meanwhile read the mode before the
// chmod. LOCKS_REQUIRED(n.mu)
func (n *fileNode) metaAheadLocked() bool { return n.metaPending || n.rewrites%2 == 1 }

// uploadedWhole reports whether the bucket has all of the file: its
// upload is done and nothing was written since.
func (n *fileNode) uploadedWhole() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.dirty && n.inBucket && !n.unlinked
}

// learnSize takes now, the size of the object a read found, if the node
// still says was, the size it said when the read began: another client
// replaced the object, and nothing of this mount (an upload) changed the
// size since. The kernel is told to ask for the attributes again
// (attributes only: no pages are dropped under the read). It kept the old
// size until the stat TTL ran out, and a reader got the new content cut at
// the old size, or zeros up to it when a getattr raced the short read that
// would have told the kernel where the file ends.
func (n *fileNode) learnSize(was, now int64) {
	n.mu.Lock()
	changed := n.staging == nil && !n.unlinked && n.size == was && was != now
	if changed {
		n.size = now
	}
	n.mu.Unlock()
	if changed {
		n.fsys.log.Debug("a read found the object's size changed by another client", "key", n.key(), "size", now)
		n.NotifyContent(-1, 0)
	}
}

// rewritten counts the start or end of a copy of the object onto itself
// (see rewrites).
func (n *fileNode) rewritten() {
	n.mu.Lock()
	n.rewrites++
	n.mu.Unlock()
}

// confirmLocked notes that the bucket holds what the node says (an upload,
// a HEAD). LOCKS_REQUIRED(n.mu)
func (n *fileNode) confirmLocked() {
	n.inBucket = true
	n.confirmed = n.fsys.now()
}

// fresh reports whether the bucket matched the node less than stat_ttl
// ago (dirNode.freshChild).
func (n *fileNode) fresh() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.unlinked && n.fsys.withinTTL(n.confirmed)
}

func (n *fileNode) fillEntry(out *fuse.EntryOut) {
	n.mu.Lock()
	defer n.mu.Unlock()
	fillAttr(&out.Attr, n.meta, n.size)
}

func (n *fileNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	fillAttr(&out.Attr, n.meta, n.size)
	return 0
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	ctx = uninterrupted(ctx)
	release := sync.OnceFunc(n.fsys.usingKeys("an open"))
	defer release()
	n.mu.Lock()
	n.handles++
	n.mu.Unlock()
	truncate := flags&syscall.O_TRUNC != 0
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || truncate {
		if err := n.stage(ctx, truncate, keepSize, release); err != nil {
			n.mu.Lock()
			n.handles--
			n.mu.Unlock()
			n.dropStagingIfIdle() // one skipped while this handle was counted
			return nil, 0, n.fsys.fail("open", n.key(), err)
		}
	}
	h := &fileHandle{node: n, append: flags&syscall.O_APPEND != 0, pagesCached: flags&syscall.O_DIRECT == 0}
	fuseFlags := openFlags(flags)
	if flags&syscall.O_ACCMODE == syscall.O_RDONLY && !truncate {
		if pin, keep := n.keepPages(); keep {
			h.pin = pin
			fuseFlags |= fuse.FOPEN_KEEP_CACHE
		}
	}
	return h, fuseFlags, 0
}

// openFlags tells the kernel how to treat a new handle. Writes through a
// write-only handle bypass the kernel's page cache (direct I/O): a FUSE
// write is sent at once in any case, and the cached copy would cost the
// writer a copy of every byte that no one reads. (Such a handle cannot be
// mmap'd, so mmap is unaffected.)
func openFlags(flags uint32) uint32 {
	if flags&syscall.O_ACCMODE == syscall.O_WRONLY {
		return fuse.FOPEN_DIRECT_IO
	}
	return 0
}

// sizeChange is what stage does to the staged size once the file is
// staged: nothing (to < 0), set it (truncate), or raise it to at least to
// (fallocate).
type sizeChange struct {
	to      int64
	atLeast bool
}

var keepSize = sizeChange{to: -1}

// stage makes sure the file has a staging file. Without one yet, the
// object's content is copied in first (ranged GETs) unless truncate is set.
// Then the staged size is changed as change says. letKeysGo is download's.
func (n *fileNode) stage(ctx context.Context, truncate bool, change sizeChange, letKeysGo func()) error {
	n.freeze.Lock()
	defer n.freeze.Unlock()
	// A truncate by path has no handle to keep the staging file from
	// being dropped (an upload ending) while it is used here.
	defer n.pinStaging()()
	newSize := change.to
	if truncate || newSize >= 0 {
		if err := n.unsealLocked(); err != nil {
			return err
		}
	}
	n.mu.Lock()
	st, size, unlinked, inBucket := n.staging, n.size, n.unlinked, n.inBucket
	n.mu.Unlock()
	if st == nil && unlinked {
		// Reached without a lookup (reopened through /proc, or unlinked
		// by another process between lookup and open): its object is
		// gone, and it has no key to read. The kernel looks the name up
		// again on ESTALE.
		return syscall.ESTALE
	}
	if st == nil {
		// An object empty when looked up may not be any more.
		copyIn := !truncate && (size > 0 || inBucket) && newSize != 0
		got := size
		if copyIn {
			st, got = n.fromKept(ctx, letKeysGo)
		} else {
			n.fsys.cfg.Cache.DropKept(n.key()) // its content goes
		}
		if st == nil {
			var err error
			if st, err = n.fsys.cfg.Cache.NewStaging(); err != nil {
				return err
			}
		}
		if got < 0 && (newSize < 0 || newSize >= size) { // not cut into at once
			var err error
			if got, err = n.stageEnd(ctx, st, size, letKeysGo); err != nil {
				st.Remove()
				return err
			}
		}
		if got < 0 {
			var err error
			if got, err = n.download(ctx, st, letKeysGo); err != nil {
				st.Remove()
				return err
			}
		}
		n.mu.Lock()
		n.staging, n.absentRead = st, 0
		// The kernel's cached pages are of the object, which the staged
		// content leaves behind from now on.
		n.etag, n.pages, n.pagesRead = "", readPin{}, nil
		// Another client may have changed the object since it was looked
		// up: the file is what the object holds now, not that cut to the
		// old size or padded with zeros to it.
		n.size = got
		n.mu.Unlock()
	}
	if truncate {
		newSize = 0
	}
	if newSize < 0 {
		return nil
	}
	if change.atLeast {
		n.mu.Lock()
		size := n.size
		n.mu.Unlock()
		if newSize <= size {
			return nil
		}
	}
	n.mu.Lock()
	extends := n.streamable && !truncate && newSize >= n.size
	n.mu.Unlock()
	if extends {
		return n.extendInOrder(ctx, st, newSize)
	}
	if st.Dropped() > 0 && newSize != 0 {
		return cache.ErrDropped // only growing in order is left to it
	}
	// The stream ends before the staged content changes, so that none of
	// the new content is dropped as its parts (cache/streamed.go).
	n.mu.Lock()
	old := n.stopStreamLocked()
	n.mu.Unlock()
	if old != nil {
		old.Abort()
	}
	if _, _, absent, _ := st.Absent(); newSize != 0 && newSize < absent {
		if err := n.fillAbsent(ctx, st); err != nil {
			return err
		}
	}
	if err := n.resize(st, newSize, truncate); err != nil {
		return err
	}
	n.mu.Lock()
	n.streamable = newSize == 0
	n.mu.Unlock()
	return nil
}

// resize sets the staged size and records the change: dirty, a new mtime.
// LOCKS_REQUIRED(n.freeze, exclusively)
func (n *fileNode) resize(st *cache.Staging, newSize int64, emptyPending bool) error {
	if err := st.Truncate(newSize); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.size, n.dirty, n.emptyPending = newSize, true, emptyPending
	n.meta.Mtime = n.fsys.now()
	n.meta.Ctime = n.meta.Mtime
	return nil
}

// extendInOrder grows a file written in order to newSize: the new bytes
// read as zeros, and the file is still in order — cp ends a sparse copy
// with such an ftruncate (over a trailing hole), which aborted its
// streamed upload and uploaded the whole file again at close.
// LOCKS_REQUIRED(n.freeze, exclusively)
func (n *fileNode) extendInOrder(ctx context.Context, st *cache.Staging, newSize int64) error {
	if err := n.resize(st, newSize, false); err != nil {
		return err
	}
	n.mu.Lock()
	stream := n.stream
	n.mu.Unlock()
	if stream != nil {
		n.streamWritten(ctx, stream, newSize)
	}
	return nil
}

// streamWritten tells a streamed upload that the staged file holds size
// bytes; if the stream fails, the whole file is uploaded at close instead.
func (n *fileNode) streamWritten(ctx context.Context, stream *upload.Stream, size int64) {
	if err := stream.Written(ctx, size); err != nil {
		n.mu.Lock()
		if n.stream == stream {
			n.stopStreamLocked()
		}
		n.mu.Unlock()
		stream.Abort()
	}
}

// stopStreamLocked ends streaming; the caller aborts the stream returned.
// LOCKS_REQUIRED(n.mu)
func (n *fileNode) stopStreamLocked() *upload.Stream {
	s := n.stream
	n.stream, n.streamable = nil, false
	return s
}

// downloadChunk is the size of one ranged GET when copying an object into
// staging.
const downloadChunk = 8 << 20

// download copies the object into st and returns how many bytes it
// copied: the object as it is now, which another client may have made
// shorter or longer since the file's size was learned — an edit of a copy
// cut to the old size would put it back without its new end. The first
// chunk tells the version and its size; the others are asked for
// `parallel` at a time (one GET at a time was a round trip per 8 MiB, and
// one connection's pace), each of the version the first came from:
// another client's replacement meanwhile fails the copy
// (bucket.ErrChanged) rather than leave a splice of two versions to be
// uploaded at the close. letKeysGo, if not nil, ends the caller's shared
// hold of the keys once it has the key, as upload's: the caller holds the
// freeze, which a rename or removal of the file waits for.
func (n *fileNode) download(ctx context.Context, st *cache.Staging, letKeysGo func()) (got int64, err error) {
	key := n.key()
	if letKeysGo != nil {
		letKeysGo()
	}
	got, etag, size, err := n.downloadRange(ctx, st, key, 0, downloadChunk, "")
	if err != nil || got < downloadChunk || got >= size {
		if err == nil && got > 0 {
			st.SetSource(key, etag) // its upload may copy what stays unchanged (upload/copying.go)
		}
		return got, err
	}
	// The rest, in chunks written at their offsets: the file first takes
	// its size (the gaps are holes, which take no room in the cache).
	if err := st.Truncate(size); err != nil {
		return got, err
	}
	if err := n.downloadChunks(ctx, st, key, etag, got, size); err != nil {
		return 0, err
	}
	st.SetSource(key, etag)
	return size, nil
}

// downloadChunks copies bytes [from, to) of the version etag of key into
// w, `parallel` chunks at a time.
func (n *fileNode) downloadChunks(ctx context.Context, w io.WriterAt, key, etag string, from, to int64) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	slots := make(chan struct{}, n.fsys.cfg.Uploader.Parallel())
	var wg sync.WaitGroup
	for off := from; off < to; off += downloadChunk {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			length := min(downloadChunk, to-off)
			copied, _, size, err := n.downloadRange(ctx, w, key, off, length, etag)
			if err == nil && copied < length {
				err = fmt.Errorf("%s: %d bytes at %d of a version of %d bytes: %w", key, copied, off, size, io.ErrUnexpectedEOF)
			}
			if err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// downloadRange copies length bytes of key from off into w, of the
// version ifMatch if set; it returns the bytes copied and the version's
// ETag and size.
func (n *fileNode) downloadRange(ctx context.Context, w io.WriterAt, key string, off, length int64, ifMatch string) (copied int64, etag string, size int64, err error) {
	r, err := n.fsys.getResuming(ctx, key, off, length, ifMatch)
	if err != nil {
		return 0, "", 0, err
	}
	defer r.Close()
	copied, err = io.Copy(io.NewOffsetWriter(w, off), io.LimitReader(r, length))
	return copied, r.ETag, r.Size, err
}

func (n *fileNode) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n.mu.Lock()
	st, size, unlinked, rewrites := n.staging, n.size, n.unlinked, n.rewrites
	n.mu.Unlock()
	for st != nil {
		if off >= size {
			return fuse.ReadResultData(nil), 0
		}
		p := dest[:min(int64(len(dest)), size-off)]
		got, err := st.ReadAt(p, off)
		if errors.Is(err, cache.ErrAbsent) {
			// Staged from the end (absent.go): a few reads there are
			// served from the object, then the start comes first.
			if got, ok := n.readAbsent(ctx, st, p, off); ok {
				return fuse.ReadResultData(dest[:got]), 0
			}
			if err := n.fetchAbsent(ctx, st); err != nil {
				return nil, n.fsys.fail("read", n.key(), err)
			}
			n.mu.Lock()
			st, size, unlinked = n.staging, n.size, n.unlinked
			n.mu.Unlock()
			continue
		}
		if errors.Is(err, os.ErrClosed) {
			// Let go under this read without the freeze: a sealed file
			// whose copy has taken its place, handed back by the queue.
			// The file's content is now in its current staging file (or
			// the bucket).
			n.mu.Lock()
			next := n.staging
			moved := next != st
			if moved {
				st, size, unlinked = next, n.size, n.unlinked
			}
			n.mu.Unlock()
			if moved {
				continue
			}
		}
		if errors.Is(err, cache.ErrDropped) && n.uploadedWhole() {
			// Streamed through a cache smaller than itself and closed,
			// its upload done: the bucket has the part that left, and
			// the read is of the object. (It failed EIO until the
			// kernel's release, which comes after close returns, let
			// the staging file go.)
			st = nil
			break
		}
		if err != nil && err != io.EOF {
			return nil, n.fsys.fail("read", n.key(), err)
		}
		return fuse.ReadResultData(dest[:got]), 0
	}
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	length := min(int64(len(dest)), size-off)
	if unlinked {
		return nil, syscall.ESTALE // its object is gone (see stage)
	}
	h, ok := fh.(*fileHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	keys := n.fsys.holdKeys("a read")
	defer keys.letGo()
	var key string
	var got int
	var pin readPin
	var err error
	keys.retry(func() bool {
		key = n.key()
		var found int64
		renamed := keys.around(func() { got, found, pin, err = h.readRemote(key, dest[:length], off, size, rewrites) })
		switch {
		case renamed:
			// The stream it opened may read another object, moved in
			// under the old key.
			h.dropStream()
		case found >= 0:
			n.learnSize(size, found)
		}
		return renamed
	})
	if errors.Is(err, bucket.ErrChanged) {
		n.versionGone(pin.etag)
	}
	if err != nil {
		return nil, n.fsys.fail("read", key, err)
	}
	if got > 0 && h.pagesCached {
		n.notePages(pin, off, off+int64(got))
	}
	return fuse.ReadResultData(dest[:got]), 0
}

func (n *fileNode) Write(ctx context.Context, fh gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	ctx = uninterrupted(ctx)
	h, _ := fh.(*fileHandle)
	appending := h != nil && h.append
	if appending {
		// Appenders go one at a time so that none picks the offset another
		// is about to write.
		n.appendMu.Lock()
		defer n.appendMu.Unlock()
	}
	n.freeze.RLock()
	defer n.freeze.RUnlock()
	n.mu.Lock()
	for n.sealed {
		// The staged content belongs to a queued upload: copy it first.
		n.mu.Unlock()
		n.freeze.RUnlock()
		n.freeze.Lock()
		err := n.unsealLocked()
		n.freeze.Unlock()
		n.freeze.RLock()
		if err != nil {
			return 0, n.fsys.fail("write", n.key(), err)
		}
		n.mu.Lock()
	}
	st := n.staging
	if st == nil {
		n.mu.Unlock()
		return 0, syscall.EBADF
	}
	if appending {
		off = n.size
	}
	// Only writes that extend the file in order keep a streamed upload;
	// one past the end leaves a gap that reads as zeros (a sparse copy).
	var stale *upload.Stream
	sequential := n.streamable && off >= n.size
	if !sequential && st.Dropped() > 0 {
		// Its uploaded parts left a full cache: no whole upload can
		// replace the stream, which goes on.
		end := n.size
		n.mu.Unlock()
		return 0, n.fsys.fail("write", n.key(), fmt.Errorf("write at %d, not at the end (%d): %w", off, end, cache.ErrDropped))
	}
	if !sequential {
		stale = n.stopStreamLocked()
	}
	n.mu.Unlock()
	// No mu across the write: it may wait for cache space, which uploads
	// free by calling back into this node.
	written, err := st.WriteAt(data, off)
	if errors.Is(err, cache.ErrAbsent) {
		// Staged from the end (absent.go): the start comes first. No
		// other writer changes the staging file of an open file in sync
		// mode, where alone files are staged so.
		n.freeze.RUnlock()
		err = n.fetchAbsent(ctx, st)
		n.freeze.RLock()
		if err == nil {
			written, err = st.WriteAt(data, off)
		}
	}
	if errors.Is(err, syscall.ENOSPC) && sequential && n.streamThrough(ctx, st, off+int64(written)) {
		var more int
		more, err = st.WriteAt(data[written:], off+int64(written))
		written += more
	}
	n.mu.Lock()
	// A failed write past the end does not grow the file (to off).
	if end := off + int64(written); written > 0 && end > n.size {
		n.size = end
	}
	size := n.size
	if written > 0 {
		n.dirty, n.emptyPending = true, false
		n.meta.Mtime = n.fsys.now()
		n.meta.Ctime = n.meta.Mtime
	}
	stream, startStream := n.stream, sequential && n.stream == nil && n.fsys.queue == nil && size > n.fsys.cfg.Uploader.PartSize()
	md := n.meta
	n.mu.Unlock()
	if stale != nil {
		stale.Abort()
	}
	if err != nil {
		return uint32(written), n.fsys.fail("write", n.key(), err)
	}
	if startStream {
		stream = n.startStream(st, md)
	}
	if stream != nil && sequential {
		n.streamWritten(ctx, stream, size)
	}
	return uint32(written), 0
}

// streamThrough starts a streamed upload of a file in write-back mode,
// written in order, that the cache cannot hold (staged bytes so far): the
// parts the bucket holds can then leave the cache (cache/streamed.go), as
// in sync mode, and its close waits for the upload instead of queueing it.
// It reports whether it started one.
func (n *fileNode) streamThrough(ctx context.Context, st *cache.Staging, staged int64) bool {
	n.mu.Lock()
	ok := n.fsys.queue != nil && n.streamable && n.stream == nil && n.staging == st && !n.sealed &&
		staged > n.fsys.cfg.Uploader.PartSize()
	md := n.meta
	n.mu.Unlock()
	if !ok {
		return false
	}
	stream := n.startStream(st, md)
	n.fsys.log.Info("the cache cannot hold a file being written: it is uploaded as it is written, and its close waits for the upload",
		"key", n.key(), "staged", humanize.IBytes(uint64(staged)))
	n.streamWritten(ctx, stream, staged)
	return true
}

// startStream begins a streamed upload of a file written in order. Its
// metadata leaves out the mtime, which would be stale by completion: the
// object's Last-Modified stands for it.
func (n *fileNode) startStream(st *cache.Staging, md upload.Metadata) *upload.Stream {
	md.Mtime, md.Ctime, md.Atime = time.Time{}, time.Time{}, time.Time{}
	stream := n.fsys.cfg.Uploader.NewStream(n.key(), st, md)
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.streamable || n.stream != nil {
		return n.stream
	}
	n.stream = stream
	return stream
}

// Flush runs at every close of every descriptor: upload if dirty and return
// the upload's error, so close reports it. An empty new file is left to
// Release (see emptyPending); in write-back mode it is journaled here all
// the same, since the close acknowledges it, and its upload waits for the
// release.
func (n *fileNode) Flush(ctx context.Context, fh gofs.FileHandle) syscall.Errno {
	ctx = uninterrupted(ctx)
	n.mu.Lock()
	deferred := n.emptyPending
	n.mu.Unlock()
	if deferred && n.fsys.queue == nil {
		return 0
	}
	release := sync.OnceFunc(n.fsys.usingKeys("a close"))
	defer release()
	var err error
	if deferred {
		_, err = n.submit(true)
	} else {
		err = n.upload(ctx, release)
	}
	if err != nil {
		return n.fsys.fail("flush", n.key(), err)
	}
	return 0
}

// Fsync: 0 means the object is durable in the bucket.
func (n *fileNode) Fsync(ctx context.Context, fh gofs.FileHandle, flags uint32) syscall.Errno {
	ctx = uninterrupted(ctx)
	release := sync.OnceFunc(n.fsys.usingKeys("an fsync"))
	err := n.upload(ctx, release)
	release()
	// Not holding keys while the queue works: a queued job follows renames.
	if err == nil && n.fsys.queue != nil {
		err = n.waitQueued(ctx)
	}
	if err == nil {
		defer n.fsys.usingKeys("an fsync")()
		err = n.applyHeldMeta(ctx, n.key())
	}
	if err != nil {
		return n.fsys.fail("fsync", n.key(), err)
	}
	return 0
}

// release lets a handle go (fileHandle.Release). Content still dirty
// (written through mmap and never flushed, an empty new file, or a failed
// upload) is uploaded once more; if that fails too, the staged data is kept
// for the next open and close.
func (n *fileNode) release() syscall.Errno {
	n.mu.Lock()
	n.handles--
	n.mu.Unlock()
	n.released()
	return 0
}

// releaseLost lets go of handles whose release the kernel dropped: it
// aborts requests still queued when the file system is unmounted, and a
// file closed just before may have its release among them.
func (n *fileNode) releaseLost() {
	n.mu.Lock()
	lost := n.handles
	n.handles = 0
	n.mu.Unlock()
	if lost > 0 {
		n.fsys.log.Debug("handles not released before the unmount", "key", n.key(), "handles", lost)
		n.released()
	}
}

// released follows a handle's release.
func (n *fileNode) released() {
	n.mu.Lock()
	last, dirty, queued := n.handles == 0, n.dirty, n.wbID
	n.mu.Unlock()
	if last && dirty {
		release := sync.OnceFunc(n.fsys.usingKeys("a release"))
		err := n.upload(context.Background(), release)
		release()
		if err != nil {
			pause := n.fsys.leave(n)
			n.fsys.log.Error("upload at release failed; tried again later, and at the unmount", "key", n.key(), "in", pause.String(), "err", err)
		} else {
			n.fsys.landed(n)
		}
	} else if last && queued != "" {
		n.fsys.queue.Unhold(queued) // an empty file's close held its upload
	}
	n.dropStagingIfIdle()
}

// pinStaging keeps the staging file until unpin is called.
func (n *fileNode) pinStaging() (unpin func()) {
	n.mu.Lock()
	n.pins++
	n.mu.Unlock()
	return func() {
		n.mu.Lock()
		n.pins--
		n.mu.Unlock()
	}
}

// pinWhileSent pins the staging file of a clean file while it is uploaded
// (a release meanwhile must not drop it); what it returns unpins it, and
// drops it if no handle is left.
func (n *fileNode) pinWhileSent() (done func()) {
	unpin := n.pinStaging()
	return func() {
		unpin()
		n.dropStagingIfIdle()
	}
}

// dropStagingIfIdle frees the staging file when no handle or pin keeps it
// and the bucket has its content.
func (n *fileNode) dropStagingIfIdle() {
	n.mu.Lock()
	var idle *cache.Staging
	keep := false
	if n.handles == 0 && n.pins == 0 && (!n.dirty || n.unlinked) && !n.sealed && n.staging != nil {
		idle, keep = n.staging, !n.dirty && !n.unlinked
		n.staging = nil
		n.dirty = false
		if keep {
			n.uploadedVersionLocked(idle, n.key())
		}
	}
	n.mu.Unlock()
	// Outside mu: Remove waits for readers of the file, and for parts of a
	// streamed upload still being written out (Staging.DropCached).
	switch {
	case keep:
		// The bucket has its content: kept for the next edit (cache/kept.go).
		n.fsys.cfg.Cache.Keep(n.key(), idle)
	case idle != nil:
		idle.Remove()
	}
	n.settled()
}

// upload puts the staged content if it is dirty, as one consistent
// snapshot: writers wait until it is done. letKeysGo, if not nil, ends the
// caller's shared hold of the keys once the key is taken under the
// freeze: what would change the key waits for the freeze instead (a
// rename of the file takes it, a directory rename uploads every file
// below first), so a rename elsewhere — and every operation queued behind
// that rename's exclusive hold — does not wait for this transfer.
func (n *fileNode) upload(ctx context.Context, letKeysGo func()) error {
	if n.fsys.queue != nil {
		if streams, err := n.submit(false); !streams {
			return err
		}
	}
	n.freezeFor("an upload")
	defer n.freeze.Unlock()
	// Marked clean while it is read: the release of a handle meanwhile
	// must not drop it.
	defer n.pinStaging()()
	n.mu.Lock()
	if !n.dirty || n.unlinked {
		n.mu.Unlock()
		return nil
	}
	st, size, md := n.staging, n.size, n.meta
	n.dirty, n.emptyPending, n.metaPending = false, false, false
	stream := n.stopStreamLocked()
	n.mu.Unlock()

	key := n.key()
	if stream != nil && stream.Key() != key {
		// Started before a rename: its parts are under the old name.
		stream.Abort()
		stream = nil
	}
	if letKeysGo != nil {
		letKeysGo()
	}
	// In write-back mode, uploads still queued for the key (a version
	// closed before) would land after this one: they go once it is there.
	return n.fsys.removing(ctx, key, func(bool) error {
		var streamErr error
		if stream != nil {
			if streamErr = stream.Complete(ctx, size); streamErr == nil {
				st.MarkUploaded()
				n.mu.Lock()
				n.confirmLocked()
				n.mu.Unlock()
				n.holdIfChangedSince(stream.Attrs().Meta)
				return nil
			}
		}
		err := n.put(ctx, key, st, size, md)
		n.mu.Lock()
		if err != nil {
			// Kept for the next close to try again — unless it can never
			// go up (absent.go): the program was told, and the next open
			// stages the object afresh once this one is released.
			n.dirty = !errors.Is(err, errStartGone)
			// A CRC-64 mismatch is an object the server stored: an
			// unlink must delete it.
			if errors.Is(err, bucket.ErrIntegrity) || errors.Is(streamErr, bucket.ErrIntegrity) {
				n.inBucket = true
			}
		} else {
			n.confirmLocked()
			st.MarkUploaded()
		}
		n.mu.Unlock()
		return err
	})
}

// holdIfChangedSince holds the metadata for a copy if the mode or owner
// changed after a streamed upload sent them.
func (n *fileNode) holdIfChangedSince(sent map[string]string) {
	n.mu.Lock()
	now := n.meta.Encode()
	changed := now["mode"] != sent["mode"] || now["uid"] != sent["uid"] || now["gid"] != sent["gid"]
	n.metaPending = n.metaPending || changed
	n.mu.Unlock()
	if changed {
		n.fsys.holdMeta(n)
	}
}

// moveTo renames the file's object from oldKey to newKey: a dirty file (or
// one staged from its end) is uploaded straight to newKey, a clean one
// copied with its current metadata (held changes included). The old object
// is then deleted.
// LOCKS_REQUIRED(n.freeze, exclusively)
func (n *fileNode) moveTo(ctx context.Context, oldKey, newKey string) error {
	if moved, err := n.renameQueued(ctx, oldKey, newKey); moved || err != nil {
		return err
	}
	n.mu.Lock()
	st, size, md, dirty := n.staging, n.size, n.meta, n.dirty
	if n.stream != nil && st.Dropped() > 0 {
		// Its parts are under the old name, and its start is not staged
		// any more to upload under the new one.
		n.mu.Unlock()
		return fmt.Errorf("renaming a file being written whose uploaded parts left the full cache: %w", syscall.EBUSY)
	}
	stream := n.stopStreamLocked()
	n.mu.Unlock()
	if stream != nil {
		stream.Abort()
	}
	// A clean file staged from its end goes up under newKey as a dirty one
	// does, its start copied on the server from the old object: a copy of
	// the object would need that start read in first.
	if dirty || hasAbsentStart(st) {
		// (Rename drops it once the file has its new key, if a release
		// meanwhile left it idle.)
		defer n.pinStaging()()
		// An older version that has just landed counts, though its file
		// is not handed back yet: asked first, so that its hand-back
		// (which sets inBucket) cannot fall between the two.
		inBucket := n.fsys.queue != nil && n.fsys.queue.Landing(oldKey)
		n.mu.Lock()
		inBucket = inBucket || n.inBucket
		n.mu.Unlock()
		if err := n.sendAs(ctx, newKey, st, size, md); err != nil || !inBucket {
			return err
		}
		return n.fsys.bucket.Delete(ctx, oldKey)
	}
	// Replace the metadata in the copy: it carries held changes, and the
	// Content-Type follows the new name.
	if err := n.fsys.moveObject(ctx, n.fsys.copyWithMeta(oldKey, newKey, size, md)); err != nil {
		return err
	}
	n.fsys.cfg.Cache.RenameKept(oldKey, newKey)
	n.mu.Lock()
	n.metaPending, n.inBucket = false, true
	n.mu.Unlock()
	return nil
}

// sendAs uploads st, the file's staging file, as key, and takes it for
// what the bucket holds. LOCKS_REQUIRED(n.freeze, exclusively)
func (n *fileNode) sendAs(ctx context.Context, key string, st *cache.Staging, size int64, md upload.Metadata) error {
	if err := n.put(ctx, key, st, size, md); err != nil {
		return err
	}
	st.MarkUploaded()
	n.mu.Lock()
	n.dirty, n.emptyPending, n.metaPending = false, false, false
	n.confirmLocked()
	n.mu.Unlock()
	return nil
}

// moveStagedBelow uploads the file as newKey if it is staged from its end,
// for a rename of a directory above it, which then neither copies its
// object nor reads its start in; it reports whether it did. Dirty or not:
// one written since the rename uploaded it would otherwise keep its start
// in an object the rename deletes.
func (n *fileNode) moveStagedBelow(ctx context.Context, newKey string) (bool, error) {
	n.freezeFor("a directory rename")
	defer n.freeze.Unlock()
	n.mu.Lock()
	st, size, md, unlinked := n.staging, n.size, n.meta, n.unlinked
	n.mu.Unlock()
	if unlinked || !hasAbsentStart(st) {
		return false, nil
	}
	// (Rename drops it once the file has its new key, if a release
	// meanwhile left it idle.)
	defer n.pinStaging()()
	return true, n.sendAs(ctx, newKey, st, size, md)
}

func (n *fileNode) takeHeldMeta() (upload.Metadata, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	pending := n.metaPending && !n.dirty && !n.unlinked
	n.metaPending = false
	return n.meta, pending
}

// applyHeldMeta sends held metadata changes of a clean file: a copy of the
// object onto itself with the new metadata.
func (n *fileNode) applyHeldMeta(ctx context.Context, key string) error {
	defer n.settled()
	if rides, err := n.settleQueuedForMeta(ctx, key); rides || err != nil {
		return err
	}
	n.freeze.Lock()
	defer n.freeze.Unlock()
	n.mu.Lock()
	pending := n.metaPending && !n.dirty && !n.unlinked
	md, size, st := n.meta, n.size, n.staging
	n.metaPending = false
	n.mu.Unlock()
	if !pending {
		return nil
	}
	var err error
	if hasAbsentStart(st) {
		// Uploaded onto itself, its start copied on the server from the
		// version it was staged from: a copy of the object could be of
		// another version, and would need the start read in to re-point it.
		defer n.pinWhileSent()()
		err = n.put(ctx, key, st, size, md)
	} else {
		n.rewritten()
		err = n.fsys.replaceMeta(ctx, key, size, md)
		n.rewritten()
	}
	if err != nil {
		n.mu.Lock()
		n.metaPending = true
		n.mu.Unlock()
	}
	return err
}

// holdForRemoval takes the file's freeze for an unlink, or a rename that
// replaces it: an upload in progress (another process's close or fsync)
// ends first — landing after the removal, it would bring the file back —
// and one that would start later finds the file forgotten. Renames hold
// FS.keys exclusively, so a rename holding the replaced file's freeze may
// take the moved file's.
//
// A file still open whose start only the object holds (staged from its
// end, absent.go) has its start fetched first: the program may go on
// reading and writing it, and did so into ESTALE once the object was gone.
// If that fails, the freeze is let go and the removal is to fail (unless
// the object had changed already: the start was lost then).
func (n *fileNode) holdForRemoval(ctx context.Context) error {
	n.freezeFor("a removal")
	n.mu.Lock()
	st, open := n.staging, n.handles > 0
	n.mu.Unlock()
	if !open || !hasAbsentStart(st) {
		return nil
	}
	if err := n.fillAbsent(ctx, st); err != nil && !errors.Is(err, errStartGone) {
		n.freeze.Unlock()
		return err
	}
	return nil
}

// freezeFor takes the freeze exclusively for op, saying so at debug level
// when it has to wait (an upload in progress, or writers).
func (n *fileNode) freezeFor(op string) {
	if !n.freeze.TryLock() {
		n.fsys.log.Debug(op+" waits for the file's upload in progress", "key", n.key())
		n.freeze.Lock()
	}
}

// forget is called when the file is unlinked or replaced: drop pending
// work.
func (n *fileNode) forget() {
	n.mu.Lock()
	n.unlinked = true
	stream := n.stopStreamLocked()
	n.mu.Unlock()
	if stream != nil {
		stream.Abort()
	}
	n.dropStagingIfIdle()
}

// Allocate is fallocate(2): mode 0 (posix_fallocate, `fallocate -l`) makes
// the file at least off+length bytes long, as a truncate up would (zeros,
// counted against cache_size), and KEEP_SIZE (rsync --preallocate) changes
// nothing a program sees; both reserve the range on the cache disk, so that
// staging its bytes does not run out of space. The bucket has no holes, so
// the other modes (punch a hole, zero or collapse a range) are EOPNOTSUPP —
// to which glibc's posix_fallocate would answer by writing zeros itself.
func (n *fileNode) Allocate(ctx context.Context, _ gofs.FileHandle, off, length uint64, mode uint32) syscall.Errno {
	if mode&^unix.FALLOC_FL_KEEP_SIZE != 0 {
		return syscall.EOPNOTSUPP
	}
	end := off + length
	if end < off || end > math.MaxInt64 {
		return syscall.EFBIG
	}
	ctx = uninterrupted(ctx)
	defer n.fsys.usingKeys("an fallocate")()
	change := keepSize
	n.mu.Lock()
	if mode == 0 && int64(end) > n.size {
		change = sizeChange{to: int64(end), atLeast: true}
	}
	n.mu.Unlock()
	if err := n.stage(ctx, false, change, nil); err != nil {
		return n.fsys.fail("fallocate", n.key(), err)
	}
	n.freeze.RLock() // as a write: the staging file stays the same meanwhile
	defer n.freeze.RUnlock()
	n.mu.Lock()
	st := n.staging
	n.mu.Unlock()
	if st == nil {
		return syscall.EBADF
	}
	if err := st.Reserve(int64(off), int64(length)); err != nil {
		return n.fsys.fail("fallocate", n.key(), err)
	}
	return 0
}

func (n *fileNode) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	ctx = uninterrupted(ctx)
	defer n.fsys.usingKeys("a setattr")()
	if size, ok := in.GetSize(); ok {
		if err := n.stage(ctx, false, sizeChange{to: int64(size)}, nil); err != nil {
			n.dropStagingIfIdle() // one skipped while staging
			return n.fsys.fail("truncate", n.key(), err)
		}
	}
	n.mu.Lock()
	changed := applySetattr(&n.meta, in, n.fsys.now())
	dirty, handles := n.dirty, n.handles
	n.mu.Unlock()

	switch {
	case dirty && handles == 0:
		// truncate(2) on a path: no close will follow, so upload now.
		if err := n.upload(ctx, nil); err != nil {
			return n.fsys.fail("truncate", n.key(), err)
		}
		n.dropStagingIfIdle()
	case changed && !dirty && n.metaQueued():
		// Rides along with the queued upload.
	case changed && !dirty:
		// The object is in the bucket: its metadata is replaced with a copy
		// onto itself, held for a moment so that the changes tools make in
		// a row (utimens, chmod, chown, then rename) cost one copy.
		n.mu.Lock()
		n.metaPending = true
		n.mu.Unlock()
		n.fsys.holdMeta(n)
	}
	return n.Getattr(ctx, fh, out)
}
