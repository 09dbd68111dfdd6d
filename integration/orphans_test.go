package integration

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ossmount/ossmount/bucket/store"
)

// A mount killed in the middle of multipart uploads — a file streaming
// while it is written, a whole upload through the SDK's Uploader — leaves
// them on the server holding parts (billed, invisible in listings). The
// next mount with the same cache directory aborts them, and not the
// upload of another mount that is still writing.
func TestKilledMountsUploadsAreAbortedByTheNext(t *testing.T) {
	// Once armed, the first part of "whole" waits — of an upload the
	// server holds: a part of the file's stream, given up before, can
	// still arrive late (and failed the test once, held in its place).
	var holding atomic.Bool
	var srv *server
	wrap, started, release := holdFirst(func(r *http.Request) bool {
		if !holding.Load() || r.Method != http.MethodPut || !r.URL.Query().Has("uploadId") || !strings.HasSuffix(r.URL.Path, "/whole") {
			return false
		}
		keys, err := srv.store.Uploads(testBucket)
		return err == nil && slices.Contains(keys, "whole")
	})
	srv = startServerWith(t, store.NewMemory(), wrap)
	uploads := func() []string {
		keys, err := srv.store.Uploads(testBucket)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(keys)
		return keys
	}
	cacheDir := filepath.Join(t.TempDir(), "cache")
	data := randomBytes(t, 6<<20)

	// Another mount of the bucket on the same cache directory, streaming
	// a file it has not finished. dd writes it, fed through a pipe: were
	// the file open in this process, the next mount's start would close
	// a copy of its descriptor at exec, and that close uploads.
	live := startMountAt(t, srv, t.TempDir(), cacheDir, "part_size=1MiB")
	doomed := startMountAt(t, srv, t.TempDir(), cacheDir, "part_size=1MiB")
	t.Cleanup(release) // before the mounts' stops
	dd := exec.Command("dd", "of="+live.path("live"), "bs=64k", "status=none")
	feed, err := dd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := dd.Start(); err != nil {
		t.Fatal(err)
	}
	defer dd.Wait()
	defer feed.Close()
	if _, err := feed.Write(data[:3<<20]); err != nil {
		t.Fatal(err)
	}

	// A stream in the middle of a file.
	bf, err := os.Create(doomed.path("big"))
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	if _, err := bf.Write(data[:3<<20]); err != nil {
		t.Fatal(err)
	}
	// A whole upload, held at its first part: a write behind the parts
	// sent ends the file's stream, so its close uploads through the
	// Uploader.
	wf, err := os.Create(doomed.path("whole"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wf.Write(data[:3<<20]); err != nil {
		t.Fatal(err)
	}
	if _, err := wf.WriteAt([]byte("behind"), 10); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the streams of big and live, and the end of whole's", func() bool {
		return slices.Equal(uploads(), []string{"big", "live"})
	})
	holding.Store(true)
	closed := inBackground(wf.Close)
	<-started
	if got, want := uploads(), []string{"big", "live", "whole"}; !slices.Equal(got, want) {
		t.Fatalf("uploads open before the kill: %v, want %v", got, want)
	}
	doomed.kill(t)
	release()
	<-closed // ENOTCONN, or EIO: the mount is gone

	next := startMountAt(t, srv, t.TempDir(), cacheDir)
	waitUntil(t, "the next mount's aborts", func() bool {
		return strings.Contains(next.logs.String(), "aborted multipart uploads that earlier mounts died before finishing")
	})
	if !strings.Contains(next.logs.String(), "uploads=2") {
		t.Errorf("the next mount did not abort both uploads:\n%s", next.logs)
	}
	if got, want := uploads(), []string{"live"}; !slices.Equal(got, want) {
		t.Fatalf("uploads open after the next mount started: %v, want %v", got, want)
	}
	for _, key := range []string{"big", "whole"} {
		if srv.exists(key) {
			t.Errorf("%s landed", key)
		}
	}

	// The live mount's upload was left alone: its file completes.
	if _, err := feed.Write(data[3<<20:]); err != nil {
		t.Fatal(err)
	}
	feed.Close()
	if err := dd.Wait(); err != nil {
		t.Fatalf("dd of the live file: %v", err)
	}
	srv.sameObject(t, "live", data)
	if got := uploads(); len(got) != 0 {
		t.Errorf("uploads left open: %v", got)
	}
	// The dead mount's ledger is gone, and the live one's once it stops
	// (a stop checks that no file is left in the cache directory; the
	// next mount's, later, too).
	live.stop(t)
}

// An unmount waits for the abort of a stream given up just before it,
// instead of exiting with the upload open and leaving it to the next
// mount.
func TestUnmountWaitsForAnAbort(t *testing.T) {
	_, m, started, release := mountHolding(t, http.MethodDelete, "rewritten", "part_size=1MiB")
	f, err := os.Create(m.path("rewritten"))
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(t, 3<<20)
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	// Behind the parts sent: the stream is given up, its abort held.
	if _, err := f.WriteAt([]byte("behind"), 10); err != nil {
		t.Fatal(err)
	}
	<-started
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	stopped := inBackground(func() error { m.stop(t); return nil })
	waitUntil(t, "the unmount's wait for the abort", func() bool {
		return strings.Contains(m.logs.String(), "waiting for the aborts of given-up multipart uploads")
	})
	release()
	<-stopped // exits 0, no ledger left (stop checks), no upload open (the server's check)
}

// A write-back mount killed in the middle of a queued upload through the
// Uploader: the next mount replays the journal (the file lands whole) and
// aborts the upload the dead one left.
func TestWritebackKilledMidUploadIsReplayedAndItsUploadAborted(t *testing.T) {
	wrap, started, release := holdFirst(func(r *http.Request) bool {
		return r.Method == http.MethodPut && r.URL.Query().Has("uploadId") && strings.HasSuffix(r.URL.Path, "/big")
	})
	srv := startServerWith(t, store.NewMemory(), wrap)
	dir, cacheDir := t.TempDir(), filepath.Join(t.TempDir(), "cache")
	m := startMountAt(t, srv, dir, cacheDir, "writeback", "writeback_delay=0s", "part_size=1MiB")
	t.Cleanup(release) // before the mounts' stops
	data := randomBytes(t, 3<<20)
	writeFile(t, m.path("big"), data) // close returns once journaled
	<-started                         // its first part, held
	m.kill(t)
	release()

	next := startMountAt(t, srv, dir, cacheDir, "writeback")
	waitUntil(t, "the next mount's abort", func() bool {
		return strings.Contains(next.logs.String(), "aborted multipart uploads that earlier mounts died before finishing")
	})
	next.stop(t) // drains the replayed queue; the server's check: no upload left open
	srv.sameObject(t, "big", data)
}
