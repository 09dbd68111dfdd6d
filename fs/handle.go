package fs

import (
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/cache"
)

// fileHandle is one open file description. The node does the work; the
// handle remembers how it was opened and keeps the read-ahead stream of an
// unstaged file.
type fileHandle struct {
	node   *fileNode
	append bool // O_APPEND: every write goes to the end
	// pagesCached: reads through it go through the kernel's page cache
	// (not O_DIRECT), so they count for keepPages.
	pagesCached bool

	mu        sync.Mutex
	stream    io.ReadCloser // GUARDED_BY(mu); open GET body, nil if none
	streamOff int64         // GUARDED_BY(mu); offset stream yields next
	streamEnd int64         // GUARDED_BY(mu); end of the requested range
	window    int64         // GUARDED_BY(mu); size of the next range
	// kept is the copy of the object the cache kept (cache/kept.go),
	// read instead of the object once a HEAD at the first read found it
	// the same version (keptChecked).
	kept        *cache.Staging // GUARDED_BY(mu)
	keptChecked bool           // GUARDED_BY(mu)
	// streamETag is the version stream reads; pin the version this handle
	// has read, whose ETag its later requests ask for (If-Match).
	streamETag string  // GUARDED_BY(mu)
	pin        readPin // GUARDED_BY(mu)
	// behind holds the bytes at behindOff of version behindETag that the
	// stream skipped to serve a read further on, and the rest of a range
	// left for the next (at most 2×maxSkip): the kernel's read-ahead sends
	// reads slightly out of order, and the read skipped over arrives next.
	// Without them it started the stream over (a new GET, and the window
	// back to its smallest) — every few MiB.
	behind     []byte // GUARDED_BY(mu)
	behindOff  int64  // GUARDED_BY(mu)
	behindETag string // GUARDED_BY(mu)
	// streamStart is where the stream's range starts; ahead the next
	// range's GET, opened early (ahead.go).
	streamStart int64     // GUARDED_BY(mu)
	ahead       *aheadGet // GUARDED_BY(mu)
}

// readPin is the version of the object a handle reads: the first it
// read from, under the key it had then. Reads through one open file are of
// one version, as mountpoint-s3's: a replacement by another client fails
// the handle's next request with EIO instead of handing the program the
// new version's bytes after the old one's (a copy out of the mount, or a
// kernel read-ahead retried as a new read, spliced the two). A new open
// reads the new version.
type readPin struct {
	key, etag string
	// rewrites is the node's count (fileNode.rewrites) when the version
	// was pinned: a copy of the object onto itself by this mount since
	// (a metadata change) replaced the version with the same bytes.
	rewrites uint64
}

var (
	_ gofs.FileHandle   = (*fileHandle)(nil)
	_ gofs.FileReleaser = (*fileHandle)(nil)
)

// Read-ahead: sequential reads are served from one ranged GET whose range
// doubles each time it is used up, from minWindow to maxWindow; a jump
// starts over. A small jump forward skips ahead in the stream, since the
// kernel's concurrent reads can arrive slightly out of order.
const (
	minWindow = 1 << 20
	maxWindow = 64 << 20
	maxSkip   = 1 << 20
)

// streamRetries bounds how often a read's stream asks again for the rest
// of its range after the connection broke in the middle of the body.
const streamRetries = 3

// readRemote fills dest from the object at off (size is the object's size,
// as far as the node knows; rewrites the node's count of them). found is
// the size of the object a new stream found (-1: none opened, or its size
// unknown); pin the version the handle reads, once it has one.
//
// Every request is of the handle's pinned version (readPin), once it has
// one: another version fails the read (bucket.ErrChanged, ESTALE). Before
// that, a stream that asked for the rest of a broken body and found the
// object replaced fails the read if some of dest came from the old
// version: a read returns one version's bytes, never a splice. If none
// did, dest comes from a new stream, of the version there now.
func (h *fileHandle) readRemote(key string, dest []byte, off, size int64, rewrites uint64) (n int, found int64, pin readPin, err error) {
	if n, ok, err := h.readKept(key, dest, off, rewrites); ok {
		h.mu.Lock()
		defer h.mu.Unlock()
		return n, -1, h.pin, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pin.etag != "" && (h.pin.key != key || h.pin.rewrites != rewrites) {
		// Renamed or rewritten by this mount since: the same bytes, in
		// another version, which the next stream reads and pins.
		h.unpinLocked()
	}
	pinned := h.pin.etag != ""
	n, found, err = h.readStreamed(key, dest, off, size)
	if !pinned && n == 0 && errors.Is(err, bucket.ErrChanged) {
		n, found, err = h.readStreamed(key, dest, off, size)
	}
	if !pinned && n > 0 && err == nil && h.streamETag != "" {
		// Bytes handed to the reader: from now on, this version only.
		h.pin = readPin{key: key, etag: h.streamETag, rewrites: rewrites}
	}
	return n, found, h.pin, err
}

// readKept reads from the kept copy of the object, if there is one (ok).
// Reads of it run in parallel.
func (h *fileHandle) readKept(key string, dest []byte, off int64, rewrites uint64) (n int, ok bool, err error) {
	h.mu.Lock()
	if !h.keptChecked {
		h.keptChecked = true
		var etag string
		h.kept, etag = h.node.fsys.keptForReading(context.Background(), key)
		switch {
		case h.kept == nil:
		case h.pin.etag == "":
			// What the object is now, as the HEAD found it.
			h.pin = readPin{key: key, etag: etag, rewrites: rewrites}
		case h.pin.etag != etag:
			// Pinned at the open to the version of the kernel's pages
			// (keepPages), which the kept copy is not.
			h.kept = nil
		}
	}
	kept := h.kept
	h.mu.Unlock()
	if kept == nil {
		return 0, false, nil
	}
	n, err = kept.ReadAt(dest, off)
	if errors.Is(err, os.ErrClosed) {
		// Evicted, or taken for an edit and gone since: the object has
		// what it held, or newer.
		h.mu.Lock()
		if h.kept == kept {
			h.kept = nil
		}
		h.mu.Unlock()
		return 0, false, nil
	}
	if err == io.EOF {
		err = nil
	}
	return n, true, err
}

// readStreamed is readRemote's one try. LOCKS_REQUIRED(h.mu)
func (h *fileHandle) readStreamed(key string, dest []byte, off, size int64) (n int, found int64, err error) {
	found = -1
	end := off + int64(len(dest))
	if len(h.behind) > 0 && h.behindETag == h.pin.etag && off >= h.behindOff && end <= h.behindOff+int64(len(h.behind)) {
		return copy(dest, h.behind[off-h.behindOff:]), -1, nil
	}
	if h.stream == nil || off < h.streamOff || off > h.streamOff+maxSkip || end > h.streamEnd {
		// Sequential: it starts where the last range ended, or a little
		// past it (the read of the range's start is still on its way),
		// whether or not that body was closed at its end since. The next
		// range starts where the last one ended.
		sequential := h.window > 0 && off >= h.streamEnd && off <= h.streamEnd+maxSkip
		start := off
		if sequential {
			start = h.streamEnd
			if h.stream != nil && h.streamEnd-h.streamOff <= maxSkip {
				// The reads of the rest of the range may be on their
				// way too. (A failure here is the next GET's to tell.)
				h.keepBehindLocked(h.streamEnd - h.streamOff)
			}
		}
		h.closeStream()
		if sequential {
			h.window = min(h.window*2, maxWindow)
		} else {
			h.window = minWindow
		}
		length := min(max(h.window, end-start), size-start)
		r, asked, ok := h.takeAheadLocked(key, start, end, size)
		if ok {
			length = asked
		} else {
			// The stream outlives this request, so it must not be tied
			// to the request's context.
			var err error
			r, err = h.node.fsys.getResuming(context.Background(), key, start, length, h.pin.etag)
			if err != nil {
				return 0, -1, err
			}
		}
		found = r.Size
		h.stream, h.streamETag, h.streamStart, h.streamOff, h.streamEnd = r, r.ETag, start, start, start+length
	}
	if skip := off - h.streamOff; skip > 0 {
		err = h.keepBehindLocked(skip)
	}
	if err == nil {
		n, err = readStream(h.stream, dest)
		h.streamOff += int64(n)
	}
	switch {
	case err == io.EOF:
		// The body ended where the server said it would, before the range
		// asked for: the object is shorter now.
		h.closeStream()
		return n, found, nil
	case err != nil:
		h.closeStream()
		return n, found, err
	}
	h.askAheadLocked(key, size)
	return n, found, nil
}

// keepBehindLocked reads the stream's next n bytes into behind, after what
// it holds if they follow it. LOCKS_REQUIRED(h.mu)
func (h *fileHandle) keepBehindLocked(n int64) error {
	held := int64(len(h.behind))
	if held == 0 || h.behindETag != h.streamETag || h.behindOff+held != h.streamOff || held+n > 2*maxSkip {
		h.behind, h.behindOff, h.behindETag, held = h.behind[:0], h.streamOff, h.streamETag, 0
	}
	h.behind = slices.Grow(h.behind, int(n))[:held+n]
	got, err := io.ReadFull(h.stream, h.behind[held:])
	h.behind = h.behind[:held+int64(got)]
	h.streamOff += int64(got)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return err
}

// readStream fills dest from r. Unlike io.ReadFull it keeps io.EOF, a body
// that ended, apart from io.ErrUnexpectedEOF, one cut short.
func readStream(r io.Reader, dest []byte) (int, error) {
	n := 0
	for n < len(dest) {
		got, err := r.Read(dest[n:])
		n += got
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// closeStream drops the read-ahead stream. LOCKS_REQUIRED(h.mu)
func (h *fileHandle) closeStream() {
	if h.stream != nil {
		h.stream.Close()
		h.stream = nil
	}
}

// unpinLocked forgets the pinned version, and the requests of it: the
// stream and the GET asked ahead. LOCKS_REQUIRED(h.mu)
func (h *fileHandle) unpinLocked() {
	h.pin = readPin{}
	h.closeStream()
	h.dropAheadLocked()
}

// dropStream closes the read-ahead stream, and forgets the kept copy and
// the pinned version: the next read looks again, under the key it has then.
func (h *fileHandle) dropStream() {
	h.mu.Lock()
	h.unpinLocked()
	h.kept, h.keptChecked = nil, false
	h.behind = nil
	h.mu.Unlock()
}

// Release closes the handle's stream, then lets the node release.
func (h *fileHandle) Release(ctx context.Context) syscall.Errno {
	h.dropStream()
	return h.node.release()
}
