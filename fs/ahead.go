package fs

import (
	"context"

	"github.com/ossmount/ossmount/bucket"
)

// Asking ahead for the next range. A GET's first byte takes a round trip
// and the server's lookup (tens of milliseconds on OSS), which a program
// reading a file in order waited for at the start of every range. Once a
// read has been served from a range of at least aheadFrom, the next
// range's GET is opened, of the same version (If-Match), to be read from
// when the program gets there; until then its first bytes wait in the
// connection's buffers. Smaller ranges are not worth it: the reader may
// be about to jump.
const aheadFrom = 4 << 20

// aheadGet is a GET opened before it is read.
type aheadGet struct {
	key         string
	off, length int64
	done        chan struct{}
	// Set before done is closed.
	body bucket.Body
	err  error
}

// askAheadLocked opens the next range's GET if the stream's range is long
// enough. LOCKS_REQUIRED(h.mu)
func (h *fileHandle) askAheadLocked(key string, size int64) {
	if h.ahead != nil || h.stream == nil || h.streamEnd-h.streamStart < aheadFrom || h.streamEnd >= size {
		return
	}
	a := &aheadGet{key: key, off: h.streamEnd, length: min(h.window*2, maxWindow, size-h.streamEnd), done: make(chan struct{})}
	etag := h.streamETag
	h.ahead = a
	go func() {
		defer close(a.done)
		// Like the stream, it outlives the request that asked for it.
		a.body, a.err = h.node.fsys.getResuming(context.Background(), key, a.off, a.length, etag)
	}()
}

// takeAheadLocked returns the GET asked ahead, and its range's length, if
// it starts at off of key and reaches end (or the object's end, size),
// once it has an answer; any other is dropped. LOCKS_REQUIRED(h.mu)
func (h *fileHandle) takeAheadLocked(key string, off, end, size int64) (bucket.Body, int64, bool) {
	a := h.ahead
	h.ahead = nil
	if a == nil {
		return bucket.Body{}, 0, false
	}
	if a.key != key || a.off != off || a.off+a.length < min(end, size) {
		a.drop()
		return bucket.Body{}, 0, false
	}
	<-a.done
	if a.err != nil {
		// Asked again by the caller, which tells what the failure means.
		return bucket.Body{}, 0, false
	}
	return a.body, a.length, true
}

// dropAheadLocked gives up the GET asked ahead, if any. LOCKS_REQUIRED(h.mu)
func (h *fileHandle) dropAheadLocked() {
	if h.ahead != nil {
		h.ahead.drop()
		h.ahead = nil
	}
}

// drop closes the GET's body once it has one, without waiting for it.
func (a *aheadGet) drop() {
	go func() {
		<-a.done
		if a.err == nil {
			a.body.Close()
		}
	}()
}
