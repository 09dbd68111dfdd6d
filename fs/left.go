package fs

import (
	"context"
	"sync"
	"time"
)

// Uploads left by a release. The upload of a file dirty at its last release
// — a new empty file's, which its close leaves to the release (emptyPending),
// one written through a shared mapping and never flushed, one whose close
// failed — has no program left to tell of a failure. Such a file was kept
// dirty until a next close that might never come: `touch` was told it
// made a file that never reached the bucket. It is tried again, with a
// growing pause, until it lands, is written or closed again, or is
// unlinked, and at the unmount.

// Pauses before the tries again of an upload a release left.
const (
	firstLeftRetry = time.Second
	maxLeftRetry   = time.Minute
)

// leftUploads are the files whose upload at release failed, with their
// tries so far.
type leftUploads struct {
	mu    sync.Mutex
	files map[*fileNode]int // GUARDED_BY(mu)
}

// leave records that n's upload at release failed, and schedules the next
// try; it returns the pause before it.
func (f *FS) leave(n *fileNode) time.Duration {
	f.left.mu.Lock()
	defer f.left.mu.Unlock()
	if f.left.files == nil {
		f.left.files = map[*fileNode]int{}
	}
	tries := f.left.files[n] + 1
	f.left.files[n] = tries
	pause := min(firstLeftRetry<<min(tries-1, 10), maxLeftRetry)
	time.AfterFunc(pause, func() { f.retryLeft(n) })
	return pause
}

// landed forgets n: its upload at release went through.
func (f *FS) landed(n *fileNode) {
	f.left.mu.Lock()
	defer f.left.mu.Unlock()
	delete(f.left.files, n)
}

// retryLeft tries n's upload again if nothing else will: the file is
// still dirty, not unlinked, and no handle is open (its close uploads; it
// is looked at again later, until it is clean).
func (f *FS) retryLeft(n *fileNode) {
	if f.isClosing() {
		return // Shutdown tries them all once more
	}
	done, busy := n.leftState()
	switch {
	case done:
		f.landed(n)
	case busy:
		f.leave(n)
	default:
		n.released()
	}
}

// leftState says whether what n's release left is done with (the file is
// clean, or unlinked) and whether a handle is open, whose close uploads it.
func (n *fileNode) leftState() (done, busy bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.dirty || n.unlinked, n.handles > 0
}

// uploadLeft tries each upload a release left once more, at the unmount.
func (f *FS) uploadLeft(ctx context.Context) {
	f.left.mu.Lock()
	files := make([]*fileNode, 0, len(f.left.files))
	for n := range f.left.files {
		files = append(files, n)
	}
	f.left.mu.Unlock()
	for _, n := range files {
		if done, busy := n.leftState(); done || busy {
			continue
		}
		f.log.Info("uploading at the unmount what a release left", "key", n.key())
		release := sync.OnceFunc(f.usingKeys("an upload at the unmount"))
		err := n.upload(ctx, release)
		release()
		if err != nil {
			f.log.Error("upload failed at the unmount too; what the file's last release left is lost", "key", n.key(), "err", err)
			continue
		}
		f.landed(n)
		n.dropStagingIfIdle()
	}
}

// isClosing reports whether Shutdown has begun.
func (f *FS) isClosing() bool {
	f.heldMu.Lock()
	defer f.heldMu.Unlock()
	return f.closing
}
