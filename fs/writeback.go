package fs

import (
	"context"

	"github.com/ossmount/ossmount/cache"
)

// Write-back mode (-o writeback): a close seals the staged file, journals
// it and queues its upload (upload.Queue), and returns. The sealed file
// belongs to the queue until the upload is done; a write to the file before
// then copies it first, so an acknowledged version is never changed. A
// rename or chmod of a file still queued changes the queued item instead of
// costing requests.

// submit seals the staged content and queues its upload (held, for an
// empty file's close: see Flush), unless the file streams through
// (streamThrough): then the caller uploads it as in sync mode. So does one
// whose streamed upload failed after its start left the cache: no queued
// upload could send it, and its close must not be acknowledged. And so
// does one staged from its end (absent.go).
func (n *fileNode) submit(held bool) (streams bool, err error) {
	n.freeze.Lock()
	defer n.freeze.Unlock()
	n.mu.Lock()
	if !n.dirty || n.unlinked {
		n.mu.Unlock()
		return false, nil
	}
	if n.stream != nil || n.staging.Dropped() > 0 || hasAbsentStart(n.staging) {
		n.mu.Unlock()
		return true, nil
	}
	st, size, md := n.staging, n.size, n.meta
	if n.wbID == "" {
		n.wbID = cache.NewRecordID()
	}
	id := n.wbID
	n.dirty, n.emptyPending, n.metaPending, n.sealed = false, false, false, true
	n.mu.Unlock()

	rec := cache.Record{ID: id, Key: n.key(), File: st.Name(), Size: size, Meta: md.Encode()}
	if held {
		err = n.fsys.queue.SubmitHeld(rec, st, n.queuedDone)
	} else {
		err = n.fsys.queue.Submit(rec, st, n.queuedDone)
	}
	if err != nil {
		n.mu.Lock()
		n.dirty, n.sealed = true, false
		n.mu.Unlock()
		return false, err
	}
	// A chmod meanwhile (Setattr does not wait for the freeze) went into
	// the version this one replaced (metaQueued): it goes into this one,
	// or is held if this one has started.
	n.mu.Lock()
	now := n.meta
	n.mu.Unlock()
	if now != md {
		if ok, _, err := n.fsys.queue.Update(id, rec.Key, now.Encode()); err != nil || !ok {
			n.mu.Lock()
			n.metaPending = true
			n.mu.Unlock()
			n.fsys.holdMeta(n)
		}
	}
	return false, nil
}

// queuedDone takes back a staged file the queue is done with. An upload
// puts an object under the file's key even when the file has a newer
// version by now: a rename or unlink must still move or delete it.
func (n *fileNode) queuedDone(f *cache.Staging, uploaded bool) {
	n.mu.Lock()
	mine := n.staging == f
	if uploaded && mine {
		n.confirmLocked()
	} else if uploaded {
		n.inBucket = true // an older version: the node says more
	}
	if mine {
		n.sealed = false
		if uploaded {
			f.MarkUploaded()
		}
	}
	n.mu.Unlock()
	if mine {
		n.dropStagingIfIdle()
	} else {
		f.Remove()
	}
}

// unsealLocked gives the file a staging file of its own if the current one
// belongs to a queued upload. LOCKS_REQUIRED(n.freeze, exclusively)
func (n *fileNode) unsealLocked() error {
	n.mu.Lock()
	sealed, st := n.sealed, n.staging
	n.mu.Unlock()
	if !sealed {
		return nil
	}
	c, err := st.CopyTo(n.fsys.cfg.Cache)
	if err != nil {
		return err
	}
	n.mu.Lock()
	if !n.sealed {
		// The queue handed st back while it was copied (queuedDone): st
		// is the file's own again, and no one would remove it if the
		// copy took its place.
		n.mu.Unlock()
		c.Remove()
		return nil
	}
	n.staging, n.sealed = c, false
	n.mu.Unlock()
	return nil
}

// waitQueued waits until the file's queued upload is done.
func (n *fileNode) waitQueued(ctx context.Context) error {
	n.mu.Lock()
	id := n.wbID
	n.mu.Unlock()
	if id == "" {
		return nil
	}
	return n.fsys.queue.Wait(ctx, id)
}

// renameQueued moves a file whose upload has not started to newKey by
// changing the queued item, and reports whether it could.
// LOCKS_REQUIRED(n.freeze, exclusively)
func (n *fileNode) renameQueued(ctx context.Context, oldKey, newKey string) (bool, error) {
	if n.fsys.queue == nil {
		return false, nil
	}
	n.mu.Lock()
	id, md, inBucket := n.wbID, n.meta, n.inBucket
	n.mu.Unlock()
	if id == "" {
		return false, nil
	}
	ok, leftBehind, err := n.fsys.queue.Update(id, newKey, md.Encode())
	if err != nil || !ok {
		if err == nil {
			// Running: let it finish, then rename the object.
			err = n.fsys.queue.Wait(ctx, id)
		}
		return false, err
	}
	n.mu.Lock()
	n.metaPending, n.inBucket = false, false
	n.mu.Unlock()
	if inBucket || leftBehind {
		// An older version was uploaded under the old name, or a failed
		// attempt left an object there.
		return true, n.fsys.bucket.Delete(ctx, oldKey)
	}
	return true, nil
}

// metaQueued puts changed metadata into the queued item, if there is one
// that has not started.
func (n *fileNode) metaQueued() bool {
	if n.fsys.queue == nil {
		return false
	}
	n.mu.Lock()
	id, md := n.wbID, n.meta
	n.mu.Unlock()
	if id == "" {
		return false
	}
	ok, _, err := n.fsys.queue.Update(id, n.key(), md.Encode())
	return ok && err == nil
}

// settleQueuedForMeta readies a held metadata change against the file's
// queued upload, which carries the metadata it was given: one not started
// takes the change along (rides), a running one is waited for — else its
// object would replace the change made before it — and one that failed is
// to be tried again and takes the change along.
func (n *fileNode) settleQueuedForMeta(ctx context.Context, key string) (rides bool, err error) {
	if n.fsys.queue == nil {
		return false, nil
	}
	for attempt := 0; ; attempt++ {
		if n.metaQueued() {
			n.mu.Lock()
			n.metaPending = false
			n.mu.Unlock()
			return true, nil
		}
		n.mu.Lock()
		id := n.wbID
		n.mu.Unlock()
		if id == "" || !n.fsys.queue.Running(id) {
			return false, nil
		}
		n.fsys.log.Debug("a metadata change waits for the file's running upload", "key", key)
		if err := n.waitQueued(ctx); err == nil || attempt > 0 {
			return false, err
		}
	}
}

// removing runs remove — an unlink, a rename onto key, a directory marker
// replaced — with the uploads queued for key held (Queue.Suspend: kept
// from starting, one running waited for; ran says one did, so that its
// object may exist now). Once remove has succeeded they are dropped —
// landing after it, they would bring the old content back; if it failed
// they go on, the file being still there.
func (f *FS) removing(ctx context.Context, key string, remove func(ran bool) error) error {
	if f.queue == nil {
		return remove(false)
	}
	ids, ran := f.queue.Suspend(ctx, key)
	err := remove(ran)
	if err != nil {
		f.queue.Resume(ids)
		return err
	}
	for _, id := range ids {
		f.queue.Remove(ctx, id)
	}
	return nil
}
