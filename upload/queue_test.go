package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/cache"
)

type queueEnv struct {
	b    *bucket.Fake
	dir  *cache.Dir
	j    *cache.Journal
	q    *Queue
	logs *logBuffer // the uploader's and the queue's, from Info up
}

// logBuffer collects log lines written from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// lines returns the lines that contain s.
func (l *logBuffer) lines(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.buf.String(), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

func newQueueEnv(t *testing.T, cfg QueueConfig) *queueEnv {
	t.Helper()
	return newQueueEnvLimited(t, cfg, 0)
}

// newQueueEnvLimited is newQueueEnv with a cache directory of limit bytes
// whose writers wait for the queue, as a mount's do.
func newQueueEnvLimited(t *testing.T, cfg QueueConfig, limit int64) *queueEnv {
	t.Helper()
	b := bucket.NewFake("test-bucket")
	d, err := cache.OpenDir(t.TempDir(), limit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close) // waits for spare staging files being made
	j, err := d.EnableWriteback("ns")
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	u := New(b, Config{}, log)
	if limit > 0 {
		cfg.Released = d.Freed
	}
	q := NewQueue(u, j, log, cfg)
	if limit > 0 {
		d.SetEvictable(q.Hurry)
	}
	t.Cleanup(func() {
		if err := q.checkIndex(); err != nil {
			t.Error(err)
		}
	})
	return &queueEnv{b: b, dir: d, j: j, q: q, logs: logs}
}

// checkIndex compares the queue's key index and counts of active and held
// items with what its items say.
func (q *Queue) checkIndex() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	active, held, indexed := 0, 0, 0
	for id, it := range q.items {
		if it.rec.ID != id {
			return fmt.Errorf("item %s holds the record of %s", id, it.rec.ID)
		}
		if _, ok := q.byKey[it.rec.Key][it]; !ok {
			return fmt.Errorf("item %s is not indexed under its key %q", id, it.rec.Key)
		}
		if !it.gaveUp {
			active++
			if it.held {
				held++
			}
		}
	}
	for _, set := range q.byKey {
		indexed += len(set)
	}
	if indexed != len(q.items) || active != q.active || held != q.held {
		return fmt.Errorf("%d items, %d indexed; %d active, counted %d; %d held, counted %d", len(q.items), indexed, active, q.active, held, q.held)
	}
	return nil
}

// staged returns a new staging file holding content.
func (e *queueEnv) staged(t *testing.T, content string) *cache.Staging {
	t.Helper()
	s, err := e.dir.NewStaging()
	if err != nil {
		t.Fatal(err)
	}
	s.WriteAt([]byte(content), 0)
	return s
}

func (e *queueEnv) submit(t *testing.T, id, key, content string) *cache.Staging {
	t.Helper()
	s := e.staged(t, content)
	if err := e.q.Submit(cache.Record{ID: id, Key: key, File: s.Name(), Size: int64(len(content))}, s, nil); err != nil {
		t.Fatal(err)
	}
	return s
}

// holdPut holds the next PutObject of key until release is closed, then
// answers it with err (nil: lets it through); later ones go through.
func (e *queueEnv) holdPut(key string, err error) (started, release chan struct{}) {
	started, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.b.SetFail(func(op, k string) error {
		held := false
		if op == "PutObject" && k == key {
			once.Do(func() { held = true })
		}
		if !held {
			return nil
		}
		close(started)
		<-release
		return err
	})
	return started, release
}

// submitHeld queues an empty version of id, held (SubmitHeld), as the
// close of an empty file does.
func (e *queueEnv) submitHeld(t *testing.T, id, key string, onDone func(*cache.Staging, bool)) {
	t.Helper()
	s := e.staged(t, "")
	if err := e.q.SubmitHeld(cache.Record{ID: id, Key: key, File: s.Name()}, s, onDone); err != nil {
		t.Fatal(err)
	}
}

// heldBehindRunning queues a version of id whose upload it holds, and a
// held empty version behind it; closing release lets the first one end.
func (e *queueEnv) heldBehindRunning(t *testing.T, id, key string) (release chan struct{}) {
	t.Helper()
	started, release := e.holdPut(key, nil)
	e.submit(t, id, key, "old")
	<-started
	e.submitHeld(t, id, key, nil)
	return release
}

// returnsNil fails unless done gives nil within ten seconds.
func returnsNil(t *testing.T, what string, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s never returned", what)
	}
}

func (e *queueEnv) content(t *testing.T, key string) string {
	t.Helper()
	r, err := e.b.Get(context.Background(), bucket.GetRequest{Key: key, Length: -1})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer r.Close()
	data, _ := io.ReadAll(r)
	return string(data)
}

func TestQueueUpdateAndRemoveBeforeStart(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{Delay: time.Hour})
	e.submit(t, "a", "tmp", "A")
	if ok, _, err := e.q.Update("a", "final", map[string]string{"mode": "33261"}); !ok || err != nil {
		t.Fatalf("update: %v %v", ok, err)
	}
	e.submit(t, "b", "gone", "B")
	e.q.Remove(context.Background(), "b")
	if err := e.q.Wait(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if e.content(t, "final") != "A" || e.b.Calls("PutObject") != 1 {
		t.Fatalf("puts %d", e.b.Calls("PutObject"))
	}
	if info, _ := e.b.Head(context.Background(), "final"); info.Meta["mode"] != "33261" {
		t.Fatalf("meta %v", info.Meta)
	}
	if err := e.q.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if recs, _ := e.j.Load(); len(recs) != 0 {
		t.Fatalf("journal left: %v", recs)
	}
}

// A rename onto a queued file rewrites the renamed file's record, then
// drops the target's upload. A crash in between leaves both records of the
// key; the journal keeps the renamed one, though its file was closed first.
func TestQueueRenameOntoQueuedFileWinsAfterACrash(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{Delay: time.Hour})
	e.submit(t, "renamed", "tmp", "new")
	e.submit(t, "target", "k", "old")
	if ok, _, err := e.q.Update("renamed", "k", nil); !ok || err != nil {
		t.Fatalf("update: %v %v", ok, err)
	}
	recs, err := e.j.Load() // what the next mount replays
	if err != nil || len(recs) != 1 || recs[0].ID != "renamed" {
		t.Fatalf("records after the crash: %+v %v", recs, err)
	}
}

func TestQueueNewerVersionReplacesQueued(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{Delay: time.Hour})
	e.submit(t, "a", "k", "old")
	e.submit(t, "a", "k", "new")
	if err := e.q.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e.content(t, "k") != "new" || e.b.Calls("PutObject") != 1 {
		t.Fatalf("content %q, %d puts", e.content(t, "k"), e.b.Calls("PutObject"))
	}
	if e.dir.Used() != 0 {
		t.Fatalf("staged bytes left: %d", e.dir.Used())
	}
}

func TestQueueRetriesThenGivesUpVisibly(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{MaxAttempts: 2, MaxBackoff: time.Millisecond})
	fails := 0
	e.b.SetFail(func(op, key string) error {
		if op == "PutObject" && key == "flaky" && fails < 1 {
			fails++
			return bucket.ErrTransient
		}
		if op == "PutObject" && key == "broken" {
			return bucket.ErrTransient
		}
		return nil
	})
	e.submit(t, "f", "flaky", "eventually")
	e.submit(t, "b", "broken", "never")
	err := e.q.Drain(context.Background())
	if err == nil {
		t.Fatal("drain hid a failed upload")
	}
	if e.content(t, "flaky") != "eventually" {
		t.Fatal("retry did not upload")
	}
	s := e.q.Stats()
	if s.GaveUp != 1 || s.Uploaded != 1 {
		t.Fatalf("stats %+v", s)
	}
	recs, _ := e.j.Load()
	if len(recs) != 1 || recs[0].Key != "broken" {
		t.Fatalf("the failed upload must stay journaled: %+v", recs)
	}
	// One line per failed attempt, with the object's name.
	if l := e.logs.lines("key=flaky"); len(l) != 1 || !strings.Contains(l[0], "retrying") {
		t.Errorf("the retried upload's lines: %q", l)
	}
	if l := e.logs.lines("key=broken"); len(l) != 2 || !strings.Contains(l[1], "giving up") {
		t.Errorf("the given-up upload's lines: %q", l)
	}
}

// An uploaded record may stay a ghost (removed without an fsync) only
// while no newer version of its key is acknowledged: a Submit settles the
// key's ghosts, and a version uploaded while a newer one is queued loses
// its record durably.
func TestQueueGhosts(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{})
	ctx := context.Background()
	e.submit(t, "a", "k", "v1")
	if err := e.q.Wait(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if n := e.j.Ghosts(); n != 1 {
		t.Fatalf("%d ghosts after the first upload, want 1", n)
	}
	// Hold the next upload of k in flight.
	running, release := e.holdPut("k", nil)
	e.submit(t, "a", "k", "v2")
	if n := e.j.Ghosts(); n != 0 {
		t.Fatalf("%d ghosts after a newer version's close, want 0", n)
	}
	<-running
	e.submit(t, "a", "k", "v3") // queued behind the running v2
	close(release)
	if err := e.q.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if e.content(t, "k") != "v3" {
		t.Fatalf("content %q", e.content(t, "k"))
	}
	if n := e.j.Ghosts(); n != 1 {
		t.Fatalf("%d ghosts, want 1 (v3's; v2 was followed by v3)", n)
	}
}

// Waiting for an upload the queue gave up on (an fsync of the file) tries
// it once more: it returns that attempt's error, not waiting for ever, and
// uploads the file if the server is back. It used to return the old error
// at once, so that nothing but the next mount sent the file.
func TestQueueWaitForGivenUpTriesOnceMore(t *testing.T) {
	// Not due before the first Wait: an attempt made and given up before
	// it would have made that Wait the second try (3 PUTs, 1 in 100 runs
	// under load).
	e := newQueueEnv(t, QueueConfig{Delay: time.Hour, MaxAttempts: 1, Revive: time.Hour})
	down := true
	var mu sync.Mutex
	e.b.SetFail(func(op, key string) error {
		mu.Lock()
		defer mu.Unlock()
		if op == "PutObject" && down {
			return bucket.ErrTransient
		}
		return nil
	})
	e.submit(t, "a", "k", "A")
	if err := e.q.Wait(context.Background(), "a"); err == nil {
		t.Fatal("the failed attempt's wait returned no error")
	}
	if s := e.q.Stats(); s.GaveUp != 1 {
		t.Fatalf("stats %+v", s)
	}
	if err := e.q.Wait(context.Background(), "a"); err == nil {
		t.Fatal("a wait while the server is down returned no error")
	}
	if n := e.b.Calls("PutObject"); n != 2 {
		t.Fatalf("%d PUTs, want 2: the wait tries once more", n)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	if err := e.q.Wait(context.Background(), "a"); err != nil {
		t.Fatalf("wait once the server is back: %v", err)
	}
	if got := e.content(t, "k"); got != "A" {
		t.Fatalf("k holds %q", got)
	}
}

// An upload given up after its attempts is tried again Revive later with
// nobody waiting for it: an outage longer than the retries left files
// unsent until the next mount, which on a mount that runs for weeks is
// weeks. One refused (a rejected request) is not tried again.
func TestQueueRevivesGivenUpUploads(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{MaxAttempts: 2, MaxBackoff: time.Millisecond, Revive: 50 * time.Millisecond})
	revived := make(chan struct{})
	var mu sync.Mutex
	puts := map[string]int{}
	e.b.SetFail(func(op, key string) error {
		if op != "PutObject" {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		puts[key]++
		switch {
		case key == "refused":
			return bucket.ErrRejected
		case puts[key] <= 2:
			return bucket.ErrTransient // the outage, through both attempts
		case puts[key] == 3:
			close(revived)
		}
		return nil
	})
	e.submit(t, "r", "refused", "R")
	e.submit(t, "a", "k", "A")
	select { // no Wait, no Drain: the revival's own attempt
	case <-revived:
	case <-time.After(time.Minute):
		t.Fatal("the upload given up was not tried again")
	}
	if err := e.q.Wait(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if got := e.content(t, "k"); got != "A" {
		t.Fatalf("k holds %q", got)
	}
	if l := e.logs.lines("key=k"); len(l) != 2 || !strings.Contains(l[1], "one more attempt later") {
		t.Errorf("the given-up upload's lines: %q", l)
	}
	if err := e.q.Wait(context.Background(), "r"); !errors.Is(err, bucket.ErrRejected) {
		t.Fatalf("wait for the refused upload: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if puts["refused"] != 1 {
		t.Fatalf("the refused upload was sent %d times, want once", puts["refused"])
	}
}

// WaitPrefix (a directory's rename or fsync) returns the error of an item
// below the prefix that was given up: its file is not in the bucket.
func TestQueueWaitPrefixReportsGivenUp(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{MaxAttempts: 1})
	e.b.SetFail(func(op, key string) error {
		if op == "PutObject" && key == "d/bad" {
			return bucket.ErrTransient
		}
		return nil
	})
	e.submit(t, "a", "d/bad", "A")
	if err := e.q.Wait(context.Background(), "a"); err == nil {
		t.Fatal("the failed attempt's wait returned no error")
	}
	e.submit(t, "b", "d/good", "B")
	e.submit(t, "c", "other/x", "C")
	if err := e.q.WaitPrefix(context.Background(), "d/"); err == nil {
		t.Fatal("WaitPrefix with an item given up below returned no error")
	}
	if err := e.q.WaitPrefix(context.Background(), "other/"); err != nil {
		t.Fatalf("WaitPrefix of another prefix: %v", err)
	}
	if got := e.content(t, "other/x"); got != "C" {
		t.Fatalf("other/x holds %q", got)
	}
}

// A version whose upload fails while a newer one of the same file waits is
// replaced by that newer one, which is uploaded: the failure neither keeps
// the newer version waiting behind retries nor drops it.
func TestQueueFailureWithNewerVersionWaiting(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{MaxAttempts: 1})
	started, release := e.holdPut("k", bucket.ErrTransient)
	e.submit(t, "a", "k", "old")
	<-started
	e.submit(t, "a", "k", "new")
	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.q.Wait(ctx, "a"); err != nil {
		t.Fatalf("wait for the newer version: %v", err)
	}
	if err := e.q.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.content(t, "k"); got != "new" {
		t.Fatalf("content %q", got)
	}
	if s := e.q.Stats(); s.GaveUp != 0 || s.Uploaded != 1 || s.Failures != 1 {
		t.Fatalf("stats %+v", s)
	}
	if e.dir.Used() != 0 {
		t.Fatalf("staged bytes left: %d", e.dir.Used())
	}
}

// Of two queued versions of one key, Queued returns the newer.
func TestQueueQueuedIsNewest(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{Delay: time.Hour})
	e.submit(t, "a", "k", "old")
	e.submit(t, "b", "k", "new")
	for i := 0; i < 20; i++ { // map order changes from one scan to the next
		if rec, ok := e.q.Queued("k"); !ok || rec.ID != "b" {
			t.Fatalf("Queued returned %+v, %v", rec, ok)
		}
	}
}

// A suspended upload does not start, even when hurried, until Resume (a
// running one is waited for: TestWritebackRenameOntoUploadingFile).
func TestQueueSuspendAndResume(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{Delay: time.Hour})
	ctx := context.Background()
	e.submit(t, "a", "k", "A")
	ids, _ := e.q.Suspend(ctx, "k")
	if len(ids) != 1 || ids[0] != "a" {
		t.Fatalf("suspended %v", ids)
	}
	e.submit(t, "a", "k", "A2") // a newer close of that file stays suspended too
	e.q.Hurry()
	e.submit(t, "b", "other", "B")
	if err := e.q.Wait(ctx, "b"); err != nil { // the workers are running
		t.Fatal(err)
	}
	if n := e.b.Calls("PutObject"); n != 1 {
		t.Fatalf("%d PutObject calls; the suspended upload started", n)
	}
	e.q.Resume(ids)
	if err := e.q.Wait(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if e.content(t, "k") != "A2" {
		t.Fatalf("content %q", e.content(t, "k"))
	}
}

// A writer short of cache space hurries the queue: every upload held back
// by the write-back delay starts at once; files closed later keep theirs.
func TestQueueHurryStartsHeldUploads(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{Delay: time.Hour, Workers: 1})
	started, release := e.holdPut("a", nil)
	e.submit(t, "1", "a", "A")
	e.submit(t, "2", "b", "B")
	if !e.q.Hurry() {
		t.Fatal("Hurry says nothing is queued")
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("an upload did not start after Hurry")
	}
	// b waits for the one worker; c, closed now, keeps its delay.
	e.submit(t, "3", "c", "C")
	e.q.mu.Lock()
	c := e.q.items["3"]
	rushed := c.running || !c.due.After(e.q.rushUntil)
	e.q.mu.Unlock()
	if rushed {
		t.Fatal("a file closed after Hurry lost its write-back delay")
	}
	close(release)
	for _, id := range []string{"1", "2"} {
		if err := e.q.Wait(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	if e.content(t, "a") != "A" || e.content(t, "b") != "B" {
		t.Fatal("wrong content")
	}
}

// An upload that has landed leaves the queue before its file is handed
// back (which tells the file system the object exists): an unlink that
// suspends the key in between must hear that an upload ran, or it takes a
// new file for one never uploaded, deletes nothing, and the object stays.
// A random test met it under load: rmdir of the emptied directory said
// ENOTEMPTY.
func TestQueueSuspendSeesAnUploadBeingHandedBack(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{Delay: time.Millisecond})
	handingBack, release := make(chan struct{}), make(chan struct{})
	s := e.staged(t, "x")
	onDone := func(f *cache.Staging, uploaded bool) {
		close(handingBack)
		<-release
		f.Remove()
	}
	if err := e.q.Submit(cache.Record{ID: "1", Key: "k", File: s.Name(), Size: 1}, s, onDone); err != nil {
		t.Fatal(err)
	}
	<-handingBack
	landing := e.q.Landing("k")
	ids, ran := e.q.Suspend(context.Background(), "k")
	close(release)
	e.q.Resume(ids)
	if !ran || !landing {
		t.Fatalf("the upload whose file was being handed back: Suspend says it ran %v, Landing %v", ran, landing)
	}
}

// The same moment for a rename of a file whose newer version is queued:
// the older version has landed under the old name, and Update must say an
// object stays there, or nothing deletes it (a crash test met it: the old
// name was in the bucket after the rename).
func TestQueueUpdateSeesAnOlderVersionBeingHandedBack(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{Delay: 0, Workers: 1})
	putStarted, letPutGo := e.holdPut("old", nil)
	handingBack, letHandBackGo := make(chan struct{}), make(chan struct{})
	first := e.staged(t, "v1")
	err := e.q.Submit(cache.Record{ID: "1", Key: "old", File: first.Name(), Size: 2}, first, func(f *cache.Staging, _ bool) {
		close(handingBack)
		<-letHandBackGo
		f.Remove()
	})
	if err != nil {
		t.Fatal(err)
	}
	<-putStarted
	second := e.staged(t, "v2")
	// Held, so that it does not start once the first is done.
	if err := e.q.SubmitHeld(cache.Record{ID: "1", Key: "old", File: second.Name(), Size: 2}, second, nil); err != nil {
		t.Fatal(err)
	}
	close(letPutGo)
	<-handingBack
	updated, leftBehind, err := e.q.Update("1", "new", nil)
	close(letHandBackGo)
	if err != nil || !updated {
		t.Fatalf("Update of the queued version: %v, %v", updated, err)
	}
	if !leftBehind {
		t.Fatal("Update did not report the older version landed under the old name")
	}
}

// A held upload (an empty file's close, before its release) stays queued
// until Unhold; an unmount's drain sends it. With no delay and one worker,
// which takes items in the order they are due, an upload submitted after
// the held one and done proves the held one was passed over.
func TestQueueHeldUploadWaitsForUnhold(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{Delay: 0, Workers: 1})
	uploaded := func(key string) bool {
		_, err := e.b.Head(context.Background(), key)
		return err == nil
	}
	done := make(chan bool, 1)
	e.submitHeld(t, "1", "held", func(f *cache.Staging, ok bool) {
		f.Remove()
		done <- ok
	})
	e.submit(t, "2", "after", "x")
	if err := e.q.Wait(context.Background(), "2"); err != nil {
		t.Fatal(err)
	}
	if uploaded("held") {
		t.Fatal("a held upload ran before Unhold")
	}
	e.q.Unhold("1")
	select {
	case ok := <-done:
		if !ok || e.content(t, "held") != "" {
			t.Fatal("the upload after Unhold failed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Unhold did not let the upload run")
	}
	e.submitHeld(t, "3", "drained", nil)
	if err := e.q.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !uploaded("drained") {
		t.Fatal("the drain left a held upload")
	}
}

// A held version waited for (a rename, an fsync) runs without Unhold,
// also when it is queued behind an older version still uploading: the
// release that would let it go may come only after the waiter is done —
// the close of another descriptor of the file waited behind the rename
// for the keys, and the mount hung.
func TestQueueWaitForAHeldVersionBehindARunningOne(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{Delay: 0, Workers: 1})
	release := e.heldBehindRunning(t, "a", "k")
	waited := make(chan error, 1)
	go func() { waited <- e.q.Wait(context.Background(), "a") }()
	// The old version finishes once Wait waits for the held one.
	for waiting := false; !waiting; time.Sleep(time.Millisecond) {
		e.q.mu.Lock()
		waiting = len(e.q.items["a"].again.waiters) > 0
		e.q.mu.Unlock()
	}
	close(release)
	returnsNil(t, "Wait for a held version queued behind a running one", waited)
	if got := e.content(t, "k"); got != "" {
		t.Fatalf("content %q, want the held (empty) version", got)
	}
}

// A writer short of cache space waits for uploads (Hurry reports some
// under way) — but not for a held one, which runs only at its file's
// release: dd into a write-back mount closes a duplicate of its descriptor
// before it writes (a held empty version), and a file larger than the
// cache then waited forever instead of streaming through.
func TestQueueHurryDoesNotWaitForHeldUploads(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{Delay: time.Hour, Workers: 1})
	e.submitHeld(t, "a", "k", nil)
	if e.q.Hurry() {
		t.Fatal("Hurry reports a held upload as one to wait for")
	}
	e.submit(t, "b", "other", "x")
	if !e.q.Hurry() {
		t.Fatal("Hurry reports nothing to wait for with an upload queued")
	}
	if err := e.q.Wait(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	e.q.Unhold("a")
	if !e.q.Hurry() {
		t.Fatal("Hurry reports nothing to wait for once the held upload is let go")
	}
}

// A drain uploads a held version queued behind a running one, which is
// scheduled only once that one ends.
func TestQueueDrainUploadsAHeldVersionBehindARunningOne(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{Delay: 0, Workers: 1})
	release := e.heldBehindRunning(t, "a", "k")
	drained := make(chan error, 1)
	go func() { drained <- e.q.Drain(context.Background()) }()
	close(release)
	returnsNil(t, "a drain with a held version behind a running one", drained)
	if got := e.content(t, "k"); got != "" {
		t.Fatalf("content %q, want the held (empty) version", got)
	}
}

// WaitPrefix starts every upload below the prefix at once (an fsync of a
// directory with thousands of queued files), not one after another: here
// each PutObject is held until all three are in flight.
func TestQueueWaitPrefixUploadsSideBySide(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{Delay: time.Hour, Workers: 4})
	const n = 3
	var mu sync.Mutex
	inFlight, all := 0, make(chan struct{})
	e.b.SetFail(func(op, key string) error {
		if op != "PutObject" {
			return nil
		}
		mu.Lock()
		if inFlight++; inFlight == n {
			close(all)
		}
		mu.Unlock()
		<-all
		return nil
	})
	for i := range n {
		e.submit(t, fmt.Sprint(i), fmt.Sprintf("d/%d", i), "x")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.q.WaitPrefix(ctx, "d/"); err != nil {
		t.Fatalf("WaitPrefix: %v (the uploads did not run side by side)", err)
	}
}

// A request the server rejects (a 4xx of no meaning of ours) would be
// rejected again: the upload gives up after its first attempt, and its
// record stays for the next mount.
func TestQueueGivesUpOnRejection(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{MaxAttempts: 5, MaxBackoff: time.Hour})
	e.b.SetFail(func(op, key string) error {
		if op == "PutObject" {
			return bucket.ErrRejected
		}
		return nil
	})
	e.submit(t, "a", "k", "A")
	if err := e.q.Wait(context.Background(), "a"); !errors.Is(err, bucket.ErrRejected) {
		t.Fatalf("wait: %v, want the rejection", err)
	}
	if s := e.q.Stats(); s.GaveUp != 1 || s.Failures != 1 {
		t.Fatalf("stats %+v: want given up after one attempt", s)
	}
	if recs, _ := e.j.Load(); len(recs) != 1 || recs[0].Key != "k" {
		t.Fatalf("the rejected upload must stay journaled: %+v", recs)
	}
}

// A writer waiting for cache space while the uploads that would free it
// fail is told ENOSPC once they are given up — it waited for ever, in an
// uninterruptible write, when the server refused every upload.
func TestWriterShortOfSpaceGetsENOSPCWhenUploadsGiveUp(t *testing.T) {
	e := newQueueEnvLimited(t, QueueConfig{Delay: time.Hour, MaxAttempts: 2, MaxBackoff: time.Millisecond}, 100)
	e.b.SetFail(func(op, key string) error {
		if op == "PutObject" {
			return bucket.ErrTransient
		}
		return nil
	})
	e.submit(t, "a", "a", strings.Repeat("x", 100)) // the cache is full
	second, err := e.dir.NewStaging()
	if err != nil {
		t.Fatal(err)
	}
	defer second.Remove()
	done := make(chan error, 1)
	go func() {
		_, err := second.WriteAt(make([]byte, 50), 0) // waits: the cache is full
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("write: %v, want ENOSPC", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the writer still waits after the only upload gave up")
	}
}

// An upload given up stays journaled for the next mount, and stays in
// view: readdir lists it, and an unlink (Suspend, then Remove) drops it —
// it was left out of both, so the unlinked file came back at once (a
// lookup adopts the newest version of a key) and at the next mount.
func TestQueueGivenUpUploadIsListedAndRemovable(t *testing.T) {
	e := newQueueEnv(t, QueueConfig{MaxAttempts: 1})
	e.b.SetFail(func(op, key string) error {
		if op == "PutObject" {
			return bucket.ErrTransient
		}
		return nil
	})
	e.submit(t, "a", "d/k", "A")
	if err := e.q.Wait(context.Background(), "a"); err == nil {
		t.Fatal("the failed attempt's wait returned no error")
	}
	if keys := e.q.Keys("d/"); len(keys) != 1 || keys[0] != "d/k" {
		t.Fatalf("Keys lists %v, want the upload given up", keys)
	}
	ids, _ := e.q.Suspend(context.Background(), "d/k")
	if len(ids) != 1 {
		t.Fatalf("Suspend found %v, want the upload given up", ids)
	}
	for _, id := range ids {
		e.q.Remove(context.Background(), id)
	}
	if _, queued := e.q.Queued("d/k"); queued {
		t.Fatal("the unlinked file's upload is still queued")
	}
	if recs, _ := e.j.Load(); len(recs) != 0 {
		t.Fatalf("its record stays for the next mount: %+v", recs)
	}
}
