package upload

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/cache"
)

// Queue is the write-back queue (-o writeback): uploads that close has
// already acknowledged, run by a few workers. It knows nothing of inodes:
// an item is an id, a key, metadata and a staged file; the file system
// changes items that have not started (rename, chmod, unlink) and waits
// for them (fsync). Retries of one request belong to the SDK; the queue
// decides only when to try a whole file again, with capped backoff, and
// gives up visibly after MaxAttempts, keeping the journal record for the
// next mount.
//
// Lock order: Queue.mu, then cache.Dir's lock (a ghost is noted under
// Queue.mu); the Dir calls Hurry without its lock held. Staged files are
// removed after Queue.mu is released. No lock is held during an upload.
type Queue struct {
	u       *Uploader
	journal *cache.Journal
	log     *slog.Logger
	cfg     QueueConfig

	mu    sync.Mutex
	cond  *sync.Cond       // signalled when items change
	items map[string]*item // GUARDED_BY(mu); by id, running or not
	// byKey indexes items by key, and active counts those not given up:
	// a lookup, an unlink or each step of a drain would otherwise go
	// through every item, and a backlog of thousands made that quadratic.
	// Only putLocked, deleteLocked, rekeyLocked and giveUpLocked change
	// items, so that the two stay true.
	byKey  map[string]map[*item]struct{} // GUARDED_BY(mu)
	active int                           // GUARDED_BY(mu)
	// held counts the active items that are held (SubmitHeld): no worker
	// takes them before their Unhold, so a writer waiting for cache
	// space must not wait for them.
	held  int      // GUARDED_BY(mu)
	ready itemHeap // GUARDED_BY(mu); items waiting to run, by due time
	// First attempts due by rushUntil are due now (Hurry: a writer waits
	// for cache space or descriptors). Files closed later keep their
	// delay, so that a rename after them still rides along.
	rushUntil time.Time // GUARDED_BY(mu)
	closed    bool      // GUARDED_BY(mu)
	// releasing counts items gone from items whose staged file is still
	// being handed back: space they hold is about to be freed.
	releasing int // GUARDED_BY(mu)
	// landing counts, by key, the uploads done whose files are still
	// being handed back: until then the file system does not know that
	// the object exists, and Suspend and Update say so in its place.
	landing map[string]int // GUARDED_BY(mu)
	stats   QueueStats     // GUARDED_BY(mu)
	wg      sync.WaitGroup
	// sending carries the uploads; a drain told to stop cancels it.
	sending context.Context
	stop    context.CancelFunc
}

// QueueConfig sets the queue's constants.
type QueueConfig struct {
	Workers     int           // uploads at once; 0: 16
	Delay       time.Duration // wait after a close before uploading, so a rename or chmod that follows rides along
	MaxAttempts int           // whole-file attempts before giving up; 0: 5
	MaxBackoff  time.Duration // 0: 30s
	// Revive is how long an upload given up after MaxAttempts failures
	// waits for one more attempt (an outage may have ended); 0: 5 minutes.
	// One refused (a bad name, a rejected request) waits for the next
	// mount. An fsync, and the drain at unmount, try it at once.
	Revive time.Duration
	// Released, if set, is called after a staged file has been handed
	// back or removed, and after a failed attempt (the cache's space
	// waiters re-check: one that failed for good frees nothing).
	Released func()
}

// QueueStats is what SIGUSR1 and the logs report.
type QueueStats struct {
	Queued        int
	Running       int
	BytesQueued   int64
	Uploaded      int
	BytesUploaded int64
	Failures      int
	GaveUp        int // items given up, until a revival or the next mount
}

type item struct {
	rec  cache.Record
	file *cache.Staging
	// onDone, if set, takes the staged file back once the item leaves the
	// queue (uploaded says whether it was): the file system may still read
	// from it. Without onDone the queue removes the file.
	onDone   func(f *cache.Staging, uploaded bool)
	due      time.Time
	running  bool
	again    *item // a newer version submitted while this one ran
	attempts int
	gaveUp   bool
	lastErr  error // of the last attempt, once given up
	// refused: given up on an error that would come again (Revive).
	refused bool
	revival *time.Timer // the next attempt of an item given up
	// suspended keeps the item from starting while a rename that replaces
	// its file runs (Suspend); schedule leaves it out of the ready heap.
	suspended bool
	// stored: an attempt failed after the server stored an object (a
	// CRC-64 mismatch), so the key may hold one the file never had.
	stored bool
	// held: journaled, but not due until Unhold (SubmitHeld).
	held    bool
	waiters []chan error
	index   int // in Queue.ready; -1 when not there
}

// itemHeap orders waiting items by due time (container/heap).
type itemHeap []*item

func (h itemHeap) Len() int           { return len(h) }
func (h itemHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h itemHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *itemHeap) Push(x any) {
	it := x.(*item)
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *itemHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	it.index = -1
	return it
}

// schedule puts it in the ready heap, unless it is suspended.
// LOCKS_REQUIRED(q.mu)
func (q *Queue) schedule(it *item) {
	if it.suspended {
		return
	}
	if it.index >= 0 {
		heap.Fix(&q.ready, it.index)
	} else {
		heap.Push(&q.ready, it)
	}
	q.cond.Broadcast()
}

// unschedule takes it out of the ready heap. LOCKS_REQUIRED(q.mu)
func (q *Queue) unschedule(it *item) {
	if it.index >= 0 {
		heap.Remove(&q.ready, it.index)
	}
}

// NewQueue starts the workers.
func NewQueue(u *Uploader, j *cache.Journal, log *slog.Logger, cfg QueueConfig) *Queue {
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Revive <= 0 {
		cfg.Revive = 5 * time.Minute
	}
	q := &Queue{u: u, journal: j, log: log, cfg: cfg, items: map[string]*item{}, byKey: map[string]map[*item]struct{}{},
		landing: map[string]int{}}
	q.sending, q.stop = context.WithCancel(context.Background())
	q.cond = sync.NewCond(&q.mu)
	for i := 0; i < cfg.Workers; i++ {
		q.wg.Add(1)
		go q.worker()
	}
	return q
}

// lastSeq is the Seq given last (nextSeq).
var lastSeq atomic.Int64

// nextSeq returns a Seq later than any given before, in this mount or,
// by the clock, in an earlier one.
func nextSeq() int64 {
	for {
		last, now := lastSeq.Load(), time.Now().UnixNano()
		if now <= last {
			now = last + 1
		}
		if lastSeq.CompareAndSwap(last, now) {
			return now
		}
	}
}

// Submit journals rec (durably) and queues its upload from file. A newer
// version of an id replaces a queued one; if that one is running, the
// newer one runs after it. onDone is called once this version is uploaded.
func (q *Queue) Submit(rec cache.Record, file *cache.Staging, onDone func(*cache.Staging, bool)) error {
	return q.submit(rec, file, onDone, false)
}

// heldFor is how far off a held item is due: never, in practice, unless
// something makes every item due (Drain, WaitPrefix, Wait).
const heldFor = 100 * 365 * 24 * time.Hour

// SubmitHeld journals rec as Submit does, but its upload waits for Unhold
// (or for an unmount, or an fsync of the file or a directory above it). A
// close of an empty file the program may be about to fill (a shell
// redirection closes a duplicate of its descriptor before the command
// writes) is acknowledged, and so must be journaled, without an upload
// that the real content would follow a moment later.
func (q *Queue) SubmitHeld(rec cache.Record, file *cache.Staging, onDone func(*cache.Staging, bool)) error {
	return q.submit(rec, file, onDone, true)
}

// Unhold makes a held version of id due after the usual delay.
func (q *Queue) Unhold(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	it, ok := q.items[id]
	if !ok {
		return
	}
	for it.again != nil {
		it = it.again
	}
	if !it.held {
		return
	}
	q.unholdLocked(it)
	it.due = q.u.now().Add(q.cfg.Delay)
	if !it.running && it.index >= 0 {
		q.schedule(it)
	}
}

// unholdLocked ends the hold of it, if any. One in items is counted by
// the index (indexLocked), which takes it out and back in around the
// change, as giveUpLocked does; one queued behind a running version is not
// indexed yet. LOCKS_REQUIRED(q.mu)
func (q *Queue) unholdLocked(it *item) {
	if !it.held {
		return
	}
	indexed := q.items[it.rec.ID] == it
	if indexed {
		q.unindexLocked(it)
	}
	it.held = false
	if indexed {
		q.indexLocked(it)
	}
}

func (q *Queue) submit(rec cache.Record, file *cache.Staging, onDone func(*cache.Staging, bool), held bool) error {
	rec.Seq = nextSeq()
	// Older uploads of the key leave no ghost behind this version.
	if err := q.journal.Settle(rec.Key); err != nil {
		return err
	}
	if err := q.journal.Add(&rec, file); err != nil {
		return err
	}
	// A worker that finishes an older upload of the key from here on sees
	// this version and removes that record durably; one that finished
	// since the Settle above left a ghost, which this one finds.
	defer func() {
		if err := q.journal.Settle(rec.Key); err != nil {
			q.log.Error("a crash could replay an older upload", "key", rec.Key, "err", err)
		}
	}()
	it := &item{rec: rec, file: file, onDone: onDone, due: q.u.now().Add(q.cfg.Delay), held: held, index: -1}
	if held {
		it.due = q.u.now().Add(heldFor)
	}
	var superseded *cache.Staging // removed after unlocking: Dir locks come after q.mu
	defer func() {
		if superseded != nil {
			superseded.Remove()
		}
	}()
	q.mu.Lock()
	defer q.mu.Unlock()
	old, ok := q.items[rec.ID]
	switch {
	case !ok:
		q.putLocked(it)
		q.schedule(it)
	case old.running:
		if old.again != nil && old.again.file != file && old.again.file != old.file {
			superseded = old.again.file
		}
		if old.again != nil {
			it.waiters = old.again.waiters
		}
		old.again = it
	default:
		if old.file != file {
			superseded = old.file
		}
		it.waiters, it.suspended, it.stored = old.waiters, old.suspended, old.stored
		q.unschedule(old)
		q.putLocked(it)
		q.schedule(it)
	}
	return nil
}

// Replay queues the records of a journal left by an earlier mount.
func (q *Queue) Replay(dir *cache.Dir, recs []cache.Record) error {
	var errs []error
	for _, rec := range recs {
		f, err := dir.OpenNamed(rec)
		if errors.Is(err, cache.ErrGhost) {
			// Uploaded before the crash; the file has been reused since.
			q.log.Debug("dropped the journal record of an upload already done", "key", rec.Key, "file", rec.File)
			os.Remove(rec.File)
			continue
		}
		if err != nil {
			errs = append(errs, err)
			q.log.Error("journaled file lost", "key", rec.Key, "file", rec.File, "err", err)
			continue
		}
		q.log.Info("replaying journaled upload", "key", rec.Key, "size", humanize.IBytes(uint64(rec.Size)))
		q.mu.Lock()
		it := &item{rec: rec, file: f, due: q.u.now(), index: -1}
		q.putLocked(it)
		q.schedule(it)
		q.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Update changes the key and metadata of a queued item that has not
// started, and reports whether it did (false: unknown or running), and
// whether an object an attempt left (item.stored), or an older version
// whose file is still being handed back (landing), stays under the old
// key for the caller to delete.
func (q *Queue) Update(id, key string, meta map[string]string) (updated, leftBehind bool, err error) {
	q.mu.Lock()
	it, ok := q.items[id]
	if !ok || it.running {
		q.mu.Unlock()
		return false, false, nil
	}
	oldKey := it.rec.Key
	q.mu.Unlock()
	for _, k := range []string{oldKey, key} {
		if err := q.journal.Settle(k); err != nil {
			return false, false, err
		}
	}
	q.mu.Lock()
	if q.items[id] != it || it.running {
		q.mu.Unlock()
		return false, false, nil
	}
	if key != it.rec.Key {
		leftBehind, it.stored = it.stored || q.landing[it.rec.Key] > 0, false
	}
	q.rekeyLocked(it, key)
	it.rec.Meta = meta
	// Bound to key last: after a crash between this record and the drop of
	// the key's older upload (a rename onto a queued file), this one wins.
	it.rec.Seq = nextSeq()
	rec, file := it.rec, it.file
	// Kept from starting while its record is rewritten: an upload that
	// ended meanwhile would hand the staged file back, and the record
	// would be written to a file let go.
	scheduled := it.index >= 0
	q.unschedule(it)
	q.mu.Unlock()
	// Journal the change before the rename or chmod is acknowledged.
	err = q.journal.Put(rec, file)
	q.mu.Lock()
	if scheduled && q.items[id] == it {
		q.schedule(it) // not if suspended meanwhile
	}
	q.mu.Unlock()
	return true, leftBehind, err
}

// Remove drops a queued item; one running is waited for first (its object
// may exist then: the caller deletes it). Callers suspend the item first
// (Suspend), so that no new attempt starts in between.
func (q *Queue) Remove(ctx context.Context, id string) {
	q.mu.Lock()
	for {
		it, ok := q.items[id]
		if !ok {
			q.mu.Unlock()
			return
		}
		if it.running {
			ch := it.waiter()
			q.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
			q.mu.Lock()
			continue
		}
		q.deleteLocked(id)
		q.unschedule(it)
		q.releasing++
		q.mu.Unlock()
		q.journal.Done(it.rec, it.file, true, false)
		it.notify(nil)
		it.handBack(false)
		q.released()
		return
	}
}

// released ends a hand-back. LOCKS_EXCLUDED(q.mu)
func (q *Queue) released() {
	q.mu.Lock()
	q.releasing--
	q.cond.Broadcast()
	q.mu.Unlock()
	q.wakeWriters()
}

// wakeWriters calls cfg.Released. LOCKS_EXCLUDED(q.mu)
func (q *Queue) wakeWriters() {
	if q.cfg.Released != nil {
		q.cfg.Released()
	}
}

// handBack gives the staged file to onDone, or removes it.
func (it *item) handBack(uploaded bool) {
	if it.onDone != nil {
		it.onDone(it.file, uploaded)
	} else {
		it.file.Remove()
	}
}

// Running reports whether id's upload is running.
func (q *Queue) Running(id string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	it, ok := q.items[id]
	return ok && it.running
}

// Wait makes id due now and waits until it is uploaded. It returns the
// error of a failed attempt (the item stays queued and is retried). An
// item given up gets one more attempt now; one refused is its error at
// once.
func (q *Queue) Wait(ctx context.Context, id string) error {
	q.mu.Lock()
	it, ok := q.items[id]
	if !ok {
		q.mu.Unlock()
		return nil
	}
	for it.again != nil {
		it = it.again
	}
	if it.gaveUp && !q.reviveLocked(it) {
		// Refused, or the queue is closed: no worker will try it again
		// before the next mount.
		q.mu.Unlock()
		return it.lastErr
	}
	ch := it.waiter()
	if !it.running {
		// Due now, and held no more: a held version's Unhold comes at the
		// file's release, which may wait for this caller (a close of the
		// file waits behind a rename for the keys). One queued behind a
		// running version is scheduled, due, once that one ends.
		q.unholdLocked(it)
		it.due = q.u.now()
		if it.index >= 0 {
			q.schedule(it)
		}
	}
	q.mu.Unlock()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// idsWithPrefix lists the items whose key starts with prefix, given up
// or not. LOCKS_EXCLUDED(q.mu)
func (q *Queue) idsWithPrefix(prefix string) []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var ids []string
	q.eachLocked(prefix, false, func(id string, _ *item) { ids = append(ids, id) })
	return ids
}

// eachLocked calls fn for every item whose key starts with prefix (is
// prefix when exact). Items given up count: their files were acknowledged
// and stay journaled for the next mount, so a lookup finds them (Adopt),
// readdir lists them, rmdir counts them and an unlink must drop them — or
// the file unlinked would come back, at once and at the next mount.
// LOCKS_REQUIRED(q.mu)
func (q *Queue) eachLocked(prefix string, exact bool, fn func(id string, it *item)) {
	if exact {
		for it := range q.byKey[prefix] {
			fn(it.rec.ID, it)
		}
		return
	}
	for id, it := range q.items {
		if strings.HasPrefix(it.rec.Key, prefix) {
			fn(id, it)
		}
	}
}

// Adopt finds the newest queued version of key, hands it to onDone from
// now on, and returns its record and staged file: a file whose node the
// kernel forgot while its upload was queued gets a new node that reads
// the queued content.
func (q *Queue) Adopt(key string, onDone func(*cache.Staging, bool)) (cache.Record, *cache.Staging, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	it := q.newestLocked(key)
	if it == nil {
		return cache.Record{}, nil, false
	}
	it.onDone = onDone
	return it.rec, it.file, true
}

// newestLocked returns the newest queued version of key, or nil.
// LOCKS_REQUIRED(q.mu)
func (q *Queue) newestLocked(key string) *item {
	var newest *item
	for it := range q.byKey[key] {
		for it.again != nil {
			it = it.again
		}
		if newest == nil || it.rec.Seq > newest.rec.Seq {
			newest = it
		}
	}
	return newest
}

// HasPrefix reports whether an upload under prefix is queued.
func (q *Queue) HasPrefix(prefix string) bool { return len(q.idsWithPrefix(prefix)) > 0 }

// Keys lists the keys queued under prefix, a directory's own marker
// included (readdir lists files and directories not uploaded yet).
func (q *Queue) Keys(prefix string) []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var keys []string
	q.eachLocked(prefix, false, func(_ string, it *item) { keys = append(keys, it.rec.Key) })
	return keys
}

// Landing reports whether an upload of key is done but its file not yet
// handed back: the object exists, though the file system may not know.
func (q *Queue) Landing(key string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.landing[key] > 0
}

// Queued returns the record of the newest queued version of key.
func (q *Queue) Queued(key string) (cache.Record, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if it := q.newestLocked(key); it != nil {
		return it.rec, true
	}
	return cache.Record{}, false
}

// Suspend keeps the uploads queued for key from starting, waits for one
// running, and returns their ids, and whether one ran (its object may
// exist now) or failed after the server stored an object: an unlink, or a
// rename that replaces the file, drops them (Remove) once it has
// succeeded — landing after it, they would bring the old content back —
// or lets them go on (Resume) if it failed.
func (q *Queue) Suspend(ctx context.Context, key string) (ids []string, ran bool) {
	q.mu.Lock()
	var running []<-chan error
	ran = q.landing[key] > 0
	q.eachLocked(key, true, func(id string, it *item) {
		ids = append(ids, id)
		ran = ran || it.stored
		it.suspended = true
		q.unschedule(it)
		if it.running {
			// Its own attempt, not the newer version Wait would follow.
			running = append(running, it.waiter())
		}
	})
	q.mu.Unlock()
	for _, ch := range running {
		q.log.Debug("the running upload of a file being removed or replaced is waited for", "key", key)
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
	return ids, ran || len(running) > 0
}

// Resume lets suspended uploads start again.
func (q *Queue) Resume(ids []string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, id := range ids {
		if it, ok := q.items[id]; ok && it.suspended {
			it.suspended = false
			if !it.running && !it.gaveUp {
				q.schedule(it)
			}
		}
	}
}

// WaitPrefix makes every item whose key starts with prefix due now and
// waits until they are uploaded (a directory rename moves only what the
// bucket holds; an fsync of a directory returns once what lies below is
// there). An item given up gets one more attempt; if that fails too, or it
// was refused, it is the error: its file is not in the bucket, and a
// rename would leave it queued under the old name.
func (q *Queue) WaitPrefix(ctx context.Context, prefix string) error {
	// All due at once, so that the workers upload them side by side
	// while this waits for each in turn.
	q.mu.Lock()
	var ids []string
	now := q.u.now()
	q.eachLocked(prefix, false, func(id string, it *item) {
		ids = append(ids, id)
		if !it.running && it.index >= 0 {
			it.due = now
			q.schedule(it)
		}
		q.reviveLocked(it)
	})
	q.mu.Unlock()
	for _, id := range ids {
		if err := q.Wait(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

// waiter returns a channel that gets the outcome of it's next attempt (or
// nil when it is removed). LOCKS_REQUIRED(q.mu)
func (it *item) waiter() <-chan error {
	ch := make(chan error, 1)
	it.waiters = append(it.waiters, ch)
	return ch
}

func (it *item) notify(err error) {
	for _, ch := range it.waiters {
		ch <- err
	}
	it.waiters = nil
}

// Stats returns the queue's counters.
func (q *Queue) Stats() QueueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.stats
	for _, it := range q.items {
		s.Queued++
		s.BytesQueued += it.rec.Size
		if it.running {
			s.Running++
		}
		if it.gaveUp {
			s.GaveUp++
		}
	}
	return s
}

// Hurry makes every queued upload due now (a writer waits for cache
// space) and reports whether any upload is queued or running, that is
// whether waiting can succeed. Held ones do not count: they wait for
// their file's release, which may wait for this writer.
func (q *Queue) Hurry() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	// A bound, not every item made due: a waiting writer asks again after
	// each upload, and a pass over thousands of items each time was
	// quadratic. Retries keep their backoff.
	q.rushUntil = later(q.rushUntil, q.u.now().Add(q.cfg.Delay))
	q.cond.Broadcast()
	return q.activeLocked()-q.held > 0
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// dueNowLocked makes every waiting item due now. LOCKS_REQUIRED(q.mu)
func (q *Queue) dueNowLocked() {
	now := q.u.now()
	for _, it := range q.ready {
		it.due = now
	}
	heap.Init(&q.ready)
	q.cond.Broadcast()
}

// Drain makes everything due now, items given up for one more attempt,
// and waits until the queue is empty or only items that gave up remain,
// logging progress. Then it stops the workers. Once ctx is done it stops
// at once: uploads under way are cancelled, and whatever is not uploaded
// stays journaled.
func (q *Queue) Drain(ctx context.Context) error {
	q.mu.Lock()
	q.dueNowLocked()
	// And every first attempt queued from now on: a held version queued
	// behind one running is scheduled only when that one ends.
	q.rushUntil = q.u.now().Add(2 * heldFor)
	for _, it := range q.items {
		q.reviveLocked(it)
	}
	q.mu.Unlock()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	done := make(chan struct{})
	go func() {
		q.mu.Lock()
		for q.activeLocked() > 0 && !q.closed {
			q.cond.Wait()
		}
		q.mu.Unlock()
		close(done)
	}()
	stopped := false
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-tick.C:
			s := q.Stats()
			q.log.Info("draining the write-back queue", "files", s.Queued, "bytes", humanize.IBytes(uint64(s.BytesQueued)),
				"uploaded", s.Uploaded, "uploaded_bytes", humanize.IBytes(uint64(s.BytesUploaded)))
		case <-ctx.Done():
			// Told to stop: the uploads under way are cancelled; what is
			// not uploaded is journaled already.
			stopped, waiting = true, false
		}
	}
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
	q.stop()
	<-done
	q.wg.Wait()
	q.mu.Lock()
	left := len(q.items)
	q.mu.Unlock()
	switch {
	case left > 0 && stopped:
		return fmt.Errorf("stopped before %d files were uploaded; they stay journaled in the cache directory and are uploaded at the next mount", left)
	case left > 0:
		return errors.New("some uploads failed; they stay journaled in the cache directory and are retried at the next mount")
	}
	return nil
}

// activeLocked counts items still to be tried or being handed back.
// LOCKS_REQUIRED(q.mu)
func (q *Queue) activeLocked() int { return q.releasing + q.active }

// putLocked makes it the item of its record's id, in place of any other.
// LOCKS_REQUIRED(q.mu)
func (q *Queue) putLocked(it *item) {
	if old, ok := q.items[it.rec.ID]; ok {
		q.unindexLocked(old)
	}
	q.items[it.rec.ID] = it
	q.indexLocked(it)
}

// deleteLocked drops the item of id. LOCKS_REQUIRED(q.mu)
func (q *Queue) deleteLocked(id string) {
	if it, ok := q.items[id]; ok {
		q.unindexLocked(it)
		delete(q.items, id)
	}
}

// rekeyLocked gives an item in items a new key. LOCKS_REQUIRED(q.mu)
func (q *Queue) rekeyLocked(it *item, key string) {
	q.unindexLocked(it)
	it.rec.Key = key
	q.indexLocked(it)
}

// giveUpLocked stops trying an item in items: until the next mount if it
// was refused, else until reviveLocked. LOCKS_REQUIRED(q.mu)
func (q *Queue) giveUpLocked(it *item, err error) {
	q.unindexLocked(it)
	it.gaveUp, it.lastErr = true, err
	q.indexLocked(it)
}

// reviveLocked makes an item given up on a failure that may pass due now,
// for one more attempt; it reports whether it did. LOCKS_REQUIRED(q.mu)
func (q *Queue) reviveLocked(it *item) bool {
	if !it.gaveUp || it.refused || q.closed || q.items[it.rec.ID] != it {
		return false // refused, dropped, replaced or revived already
	}
	if it.revival != nil {
		it.revival.Stop() // revived sooner: by an fsync
		it.revival = nil
	}
	q.unindexLocked(it)
	it.gaveUp, it.lastErr = false, nil
	it.attempts = q.cfg.MaxAttempts - 1
	q.indexLocked(it)
	it.due = q.u.now()
	if !it.suspended {
		q.schedule(it)
	}
	q.cond.Broadcast()
	return true
}

// LOCKS_REQUIRED(q.mu)
func (q *Queue) indexLocked(it *item) {
	set := q.byKey[it.rec.Key]
	if set == nil {
		set = map[*item]struct{}{}
		q.byKey[it.rec.Key] = set
	}
	set[it] = struct{}{}
	if !it.gaveUp {
		q.active++
		if it.held {
			q.held++
		}
	}
}

// LOCKS_REQUIRED(q.mu)
func (q *Queue) unindexLocked(it *item) {
	set := q.byKey[it.rec.Key]
	delete(set, it)
	if len(set) == 0 {
		delete(q.byKey, it.rec.Key)
	}
	if !it.gaveUp {
		q.active--
		if it.held {
			q.held--
		}
	}
}

// next returns the item to upload, waiting until one is due.
// LOCKS_REQUIRED(q.mu)
func (q *Queue) next() *item {
	for !q.closed {
		if q.ready.Len() == 0 {
			q.cond.Wait()
			continue
		}
		top := q.ready[0]
		wait := top.due.Sub(q.u.now())
		if wait <= 0 || (top.attempts == 0 && !top.due.After(q.rushUntil)) {
			return heap.Pop(&q.ready).(*item)
		}
		t := time.AfterFunc(wait, func() {
			q.mu.Lock()
			q.cond.Broadcast()
			q.mu.Unlock()
		})
		q.cond.Wait()
		t.Stop()
	}
	return nil
}

func (q *Queue) worker() {
	defer q.wg.Done()
	q.mu.Lock()
	for {
		it := q.next()
		if it == nil {
			q.mu.Unlock()
			return
		}
		q.unholdLocked(it) // made due (Drain, WaitPrefix): held no more
		it.running = true
		rec := it.rec
		q.mu.Unlock()

		md := DecodeMetadata(rec.Meta, Metadata{})
		contentType := ""
		if strings.HasSuffix(rec.Key, "/") {
			contentType = DirContentType // a directory's marker (mkdir)
		}
		err := q.u.put(q.sending, rec.Key, it.file, rec.Size, q.u.Attrs(rec.Key, md, contentType), false)

		q.mu.Lock()
		it.running = false
		if q.closed && errors.Is(err, context.Canceled) {
			// Stopped (Drain): not an attempt that failed. The item and
			// its record stay for the next mount.
			q.cond.Broadcast()
			continue
		}
		it.stored = it.stored || errors.Is(err, bucket.ErrIntegrity)
		next := it.again
		switch {
		case err != nil && next == nil:
			q.failedLocked(it, err)
			// A writer waiting for cache space looks again: waiting
			// helps no more once this was the last upload under way.
			q.mu.Unlock()
			q.wakeWriters()
			q.mu.Lock()
			continue
		case err != nil:
			// A newer version was closed meanwhile: it replaces this one,
			// as Submit replaces a version not started, and is tried
			// afresh.
			q.stats.Failures++
			q.log.Warn("write-back upload failed; the newer version of the file replaces it", failure(rec, err)...)
			it.notify(err)
		default:
			q.stats.Uploaded++
			q.stats.BytesUploaded += rec.Size
		}
		uploaded := err == nil
		if next != nil {
			next.suspended, next.stored = it.suspended, it.stored
			q.putLocked(next)
			q.schedule(next)
		} else {
			q.deleteLocked(rec.ID)
		}
		// The record may become a ghost (cache/ghosts.go) only while no
		// newer version of the file is acknowledged: a newer one queued
		// already is not settled against it, so then it goes durably.
		// Removed under q.mu, so that a Submit that did not queue before
		// this point settles it after queueing.
		ghost := uploaded && next == nil
		if ghost {
			q.journal.Done(rec, it.file, true, true)
		}
		q.releasing++
		if uploaded {
			q.landing[rec.Key]++
		}
		q.cond.Broadcast()
		q.mu.Unlock()

		if !ghost {
			q.journal.Done(rec, it.file, next == nil, false)
		}
		it.notify(nil)
		if next == nil || next.file != it.file {
			it.handBack(uploaded)
		}
		q.released()
		q.mu.Lock()
		if uploaded {
			if q.landing[rec.Key]--; q.landing[rec.Key] == 0 {
				delete(q.landing, rec.Key)
			}
		}
	}
}

// failure describes a failed attempt to upload rec: the one line it gets.
func failure(rec cache.Record, err error) []any {
	return []any{"key", rec.Key, "size", humanize.IBytes(uint64(rec.Size)), "request_id", bucket.RequestID(err), "err", err}
}

// failedLocked schedules another attempt with backoff, or gives up.
// LOCKS_REQUIRED(q.mu)
func (q *Queue) failedLocked(it *item, err error) {
	it.attempts++
	q.stats.Failures++
	// A name OSS refuses, or a request it rejects, fails the same way
	// each time: the record stays for the next mount.
	refused := errors.Is(err, ErrInvalidName) || errors.Is(err, ErrNameTooLong) || errors.Is(err, bucket.ErrRejected)
	switch {
	case refused:
		it.refused = true
		q.giveUpLocked(it, err)
		q.log.Error("write-back upload refused; giving up until the next mount (the data stays journaled)",
			append(failure(it.rec, err), "attempts", it.attempts)...)
	case it.attempts >= q.cfg.MaxAttempts:
		q.giveUpLocked(it, err)
		it.revival = time.AfterFunc(q.cfg.Revive, func() {
			q.mu.Lock()
			defer q.mu.Unlock()
			q.reviveLocked(it)
		})
		q.log.Error("write-back upload failed; giving up for now, one more attempt later, at an fsync of the file or at unmount (the data stays journaled)",
			append(failure(it.rec, err), "attempts", it.attempts, "next_in", q.cfg.Revive.String())...)
	default:
		backoff := min(time.Second<<(it.attempts-1), q.cfg.MaxBackoff)
		it.due = q.u.now().Add(backoff)
		q.schedule(it)
		q.log.Warn("write-back upload failed; retrying", append(failure(it.rec, err), "attempt", it.attempts, "in", backoff.String())...)
	}
	it.notify(err)
	q.cond.Broadcast()
}
