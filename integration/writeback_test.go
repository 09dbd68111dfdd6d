package integration

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/ossmount/ossmount/bucket/store"
	"github.com/ossmount/ossmount/integration/osslocal"
)

// DESIGN §2 write-back: close returns once the data is journaled, even
// while the server refuses every upload; the queue delivers it later.
func TestWritebackCloseDoesNotWaitForTheServer(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "writeback", "writeback_delay=0s")
	os.Mkdir(m.path("wb"), 0o755)
	srv.AddFault(osslocal.Fault{Op: "PutObject", Status: 503})
	want := map[string][]byte{}
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("wb/f%02d", i)
		want[name] = randomBytes(t, 1000+i)
		writeFile(t, m.path(name), want[name])
	}
	srv.ClearFaults()
	// fsync waits for that file's upload.
	f, err := os.Open(m.path("wb/f03"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	f.Close()
	srv.sameObject(t, "wb/f03", want["wb/f03"])
	// Unmount drains the rest.
	m.stop(t)
	for k, v := range want {
		srv.sameObject(t, k, v)
	}
}

// A rename, chmod or unlink of a file still queued changes the job: one
// request per file, no upload-then-copy.
func TestWritebackRenameAndUnlinkWhileQueued(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "writeback", "writeback_delay=1h")
	writeFile(t, m.path(".tmp.partial"), []byte("final content"))
	os.Chmod(m.path(".tmp.partial"), 0o640)
	if err := os.Rename(m.path(".tmp.partial"), m.path("final.txt")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, m.path("doomed"), []byte("never sent"))
	if err := os.Remove(m.path("doomed")); err != nil {
		t.Fatal(err)
	}
	// Reading back before the upload sees the new bytes.
	if data, err := os.ReadFile(m.path("final.txt")); err != nil || string(data) != "final content" {
		t.Fatalf("read back: %q %v", data, err)
	}
	m.stop(t)
	srv.sameObject(t, "final.txt", []byte("final content"))
	c := srv.Counts()
	if c["PutObject"] != 1 || c["CopyObject"] != 0 || c["DeleteObject"] != 0 {
		t.Fatalf("requests %v, want one PutObject", c)
	}
	if o, _ := srv.store.Head(testBucket, "final.txt"); o.Meta["mode"] != fmt.Sprint(syscall.S_IFREG|0o640) {
		t.Fatalf("chmod while queued: %v", o.Meta)
	}
	if srv.exists("doomed") || srv.exists(".tmp.partial") {
		t.Fatalf("keys %v", srv.keys(t))
	}
}

// An unlink while the file's upload runs waits for that upload, then
// deletes the object it made.
func TestWritebackUnlinkWhileUploading(t *testing.T) {
	srv, m, release := writeWhileUploadHeld(t, "racing", []byte("uploaded while unlinked"))
	err := whileUploadHeld(t, m, `msg="the running upload of a file being removed or replaced is waited for" key=racing`, release,
		func() error { return os.Remove(m.path("racing")) })
	if err != nil {
		t.Fatal(err)
	}
	if srv.exists("racing") {
		t.Fatal("the object the running upload made outlived the unlink")
	}
	if _, err := os.Stat(m.path("racing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat after unlink: %v", err)
	}
	m.stop(t)
	if srv.exists("racing") {
		t.Fatalf("keys after unmount %v", srv.keys(t))
	}
}

// A rename while an older version's upload runs, with a newer version
// being written, leaves no object under the old name.
func TestWritebackRenameWhileOlderVersionUploads(t *testing.T) {
	srv, m, release := writeWhileUploadHeld(t, "old", []byte("v1"))
	f, err := os.OpenFile(m.path("old"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("v2")); err != nil {
		t.Fatal(err)
	}
	// Either order of the rename and the end of the upload must work.
	renamed := inBackground(func() error { return os.Rename(m.path("old"), m.path("new")) })
	release()
	if err := <-renamed; err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	m.stop(t)
	srv.sameObject(t, "new", []byte("v1v2"))
	if srv.exists("old") {
		t.Fatalf("the older version's object outlived the rename: keys %v", srv.keys(t))
	}
}

// A rename onto a file whose upload runs waits for that upload and drops
// the file's queued versions: none lands over the renamed file.
func TestWritebackRenameOntoUploadingFile(t *testing.T) {
	srv, m, release := writeWhileUploadHeld(t, "target", []byte("replaced"))
	writeFile(t, m.path("source"), []byte("renamed over it"))
	err := whileUploadHeld(t, m, `msg="the running upload of a file being removed or replaced is waited for" key=target`, release,
		func() error { return os.Rename(m.path("source"), m.path("target")) })
	if err != nil {
		t.Fatal(err)
	}
	m.stop(t)
	srv.sameObject(t, "target", []byte("renamed over it"))
	if srv.exists("source") {
		t.Fatalf("keys %v", srv.keys(t))
	}
}

// A rename onto a file whose upload is still queued drops that upload.
func TestWritebackRenameOntoQueuedFile(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "writeback", "writeback_delay=1h")
	writeFile(t, m.path("target"), []byte("replaced"))
	writeFile(t, m.path("source"), []byte("renamed over it"))
	if err := os.Rename(m.path("source"), m.path("target")); err != nil {
		t.Fatal(err)
	}
	m.stop(t)
	srv.sameObject(t, "target", []byte("renamed over it"))
	if c := srv.Counts(); c["PutObject"] != 1 {
		t.Fatalf("requests %v, want one PutObject", c)
	}
}

// A rename onto a file whose upload is queued that fails leaves that file
// as it was: its upload goes on.
func TestWritebackFailedRenameOntoQueuedFile(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "writeback", "writeback_delay=1h")
	writeFile(t, m.path("source"), []byte("uploaded source"))
	run(t, "sync", m.path("source")) // uploaded: the rename will copy it
	writeFile(t, m.path("target"), []byte("queued target"))
	srv.AddFault(osslocal.Fault{Op: "CopyObject", Status: 500})
	if err := os.Rename(m.path("source"), m.path("target")); err == nil {
		t.Fatal("rename succeeded although every copy failed")
	}
	srv.ClearFaults()
	m.stop(t)
	srv.sameObject(t, "target", []byte("queued target"))
	srv.sameObject(t, "source", []byte("uploaded source"))
}

// An unlink that fails leaves the file as it was: the upload of its newer
// version, still queued, goes on.
func TestWritebackFailedUnlinkKeepsQueuedVersion(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "writeback", "writeback_delay=1h")
	writeFile(t, m.path("f"), []byte("v1"))
	run(t, "sync", m.path("f")) // v1 in the bucket
	writeFile(t, m.path("f"), []byte("v2, queued"))
	srv.AddFault(osslocal.Fault{Op: "DeleteObject", Status: 500})
	if err := os.Remove(m.path("f")); err == nil {
		t.Fatal("unlink succeeded although every delete failed")
	}
	srv.ClearFaults()
	m.stop(t)
	srv.sameObject(t, "f", []byte("v2, queued"))
}

// An rmdir that fails leaves the directory as it was: its marker, still
// queued, is uploaded.
func TestWritebackFailedRmdirKeepsQueuedMarker(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "writeback", "writeback_delay=1h")
	if err := os.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	srv.AddFault(osslocal.Fault{Op: "DeleteObject", Status: 500})
	if err := os.Remove(m.path("d")); err == nil {
		t.Fatal("rmdir succeeded although every delete failed")
	}
	srv.ClearFaults()
	m.stop(t)
	if !srv.exists("d/") {
		t.Fatalf("the directory's marker is lost: keys %v", srv.keys(t))
	}
}

// A chmod while the file's upload runs, held past the running upload's
// start, is not replaced by the metadata that upload carries.
func TestWritebackChmodWhileUploading(t *testing.T) {
	srv, m, release := writeWhileUploadHeld(t, "slow", []byte("content"))
	if err := os.Chmod(m.path("slow"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The held change comes due (after about a second) while the upload
	// still runs.
	waitUntil(t, "the held change to wait for the upload", func() bool {
		return strings.Contains(m.logs.String(), "a metadata change waits for the file's running upload")
	})
	release()
	m.stop(t)
	srv.sameObject(t, "slow", []byte("content"))
	if o, _ := srv.store.Head(testBucket, "slow"); o.Meta["mode"] != fmt.Sprint(syscall.S_IFREG|0o600) {
		t.Fatalf("mode after chmod while uploading: %v", o.Meta)
	}
}

// writeWhileUploadHeld writes key through a write-back mount whose server
// holds the key's first PUT back (mountHoldingPut), and returns once that
// upload runs.
func writeWhileUploadHeld(t *testing.T, key string, content []byte) (*server, *mount, func()) {
	t.Helper()
	srv, m, started, release := mountHoldingPut(t, key, "writeback", "writeback_delay=0s")
	writeFile(t, m.path(key), content)
	<-started
	return srv, m, release
}

// A second SIGTERM while the unmount drains a queue the server keeps
// failing stops the drain before its retries run out, and cancels an
// upload the server holds: the mount exits (status 2, saying why), and the
// next mount uploads every file.
func TestSecondSignalStopsTheDrain(t *testing.T) {
	srv := startServer(t)
	dir, cacheDir := t.TempDir(), filepath.Join(t.TempDir(), "cache")
	m := startMountAt(t, srv, dir, cacheDir, "writeback", "writeback_delay=0s")
	// Held until the test ends: a stall would outlast the client (the
	// server notices no closed connection before it reads the body).
	held := make(chan struct{})
	defer close(held)
	srv.AddFault(osslocal.Fault{Op: "PutObject", Before: func() { <-held }, Count: 1})
	srv.AddFault(osslocal.Fault{Op: "PutObject", Status: 503})
	want := map[string][]byte{}
	for i := range 5 {
		name := fmt.Sprintf("f%d", i)
		want[name] = randomBytes(t, 1000*(i+1))
		writeFile(t, m.path(name), want[name])
	}
	m.stopped = true
	m.cmd.Process.Signal(syscall.SIGTERM)
	waitUntil(t, "the drain", func() bool { return strings.Contains(m.logs.String(), `msg="draining the write-back queue"`) })
	m.cmd.Process.Signal(syscall.SIGTERM)
	err := m.wait() // a drain that goes on is stopped with its goroutines in the log
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Errorf("ossmount exited with %v after a stopped drain, want status 2", err)
	}
	logs := m.logs.String()
	if strings.Contains(logs, "giving up") || !strings.Contains(logs, "stopped before 5 files were uploaded") {
		t.Errorf("the drain was not stopped by the second signal:\n%s", logs)
	}
	if isMounted(dir) {
		t.Errorf("%s still mounted", dir)
	}
	srv.ClearFaults()
	m = startMountAt(t, srv, dir, cacheDir, "writeback")
	m.stop(t)
	for name, data := range want {
		srv.sameObject(t, name, data)
	}
}

// A file whose uploads the queue gave up on (the server failed them all)
// is sent by an fsync once the server is back, and by the drain at
// unmount: before, it waited for the next mount whatever came first.
func TestWritebackGivenUpUploadsAreTriedAgain(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "writeback", "writeback_delay=0s", "writeback_attempts=1")
	srv.AddFault(osslocal.Fault{Op: "PutObject", Status: 503})
	synced, unmounted := randomBytes(t, 3000), randomBytes(t, 4000)
	writeFile(t, m.path("synced"), synced)
	writeFile(t, m.path("unmounted"), unmounted)
	waitUntil(t, "both uploads given up", func() bool {
		return strings.Count(m.logs.String(), "giving up for now") == 2
	})
	srv.ClearFaults()
	f, err := os.OpenFile(m.path("synced"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync once the server is back: %v", err)
	}
	f.Close()
	srv.sameObject(t, "synced", synced)
	m.stop(t)
	srv.sameObject(t, "unmounted", unmounted)
}

// After a crash (SIGKILL) the next mount with the same cache directory
// uploads every acknowledged file; a file still open at the crash was never
// acknowledged and leaves nothing behind.
func TestWritebackJournalReplayAfterKill(t *testing.T) {
	srv := startServer(t)
	dir, cacheDir := t.TempDir(), filepath.Join(t.TempDir(), "cache")
	m := startMountAt(t, srv, dir, cacheDir, "writeback", "writeback_delay=1h")
	want := map[string][]byte{}
	// Files uploaded at once (fsync) leave their staging files for reuse,
	// longer than the files queued next: replay must not read their tails.
	if err := os.MkdirAll(m.path("crash"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("crash/uploaded%d", i)
		want[name] = randomBytes(t, 100_000)
		f, err := os.Create(m.path(name))
		if err != nil {
			t.Fatal(err)
		}
		f.Write(want[name])
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("crash/f%d", i)
		want[name] = randomBytes(t, 5000*i)
		writeFile(t, m.path(name), want[name])
	}
	// An empty directory: only its journaled marker keeps it.
	if err := os.Mkdir(m.path("crash/empty"), 0o750); err != nil {
		t.Fatal(err)
	}
	want["crash/empty/"] = nil
	open, err := os.Create(m.path("crash/unacknowledged"))
	if err != nil {
		t.Fatal(err)
	}
	open.WriteString("not closed")
	m.kill(t)
	open.Close()
	for k := range want {
		if srv.exists(k) != strings.HasPrefix(k, "crash/uploaded") {
			t.Fatalf("%s uploaded before the crash; the test needs it queued", k)
		}
	}

	m = startMountAt(t, srv, dir, cacheDir, "writeback")
	m.stop(t) // drains the replayed queue
	for k, v := range want {
		srv.sameObject(t, k, v)
	}
	if srv.exists("crash/unacknowledged") {
		t.Fatal("an unacknowledged file was uploaded")
	}
	if !m.logged("replaying") {
		t.Errorf("no log line about the replay")
	}
}

// A close acknowledges what the file holds, nothing included: a new empty
// file, or one truncated by its open, is journaled by its close, not by
// the release the kernel sends later — a crash in between must not lose
// it. A shared mapping holds the release off, as it does for as long as a
// program keeps one.
func TestWritebackEmptyCloseSurvivesACrash(t *testing.T) {
	srv := startServer(t)
	dir, cacheDir := t.TempDir(), filepath.Join(t.TempDir(), "cache")
	m := startMountAt(t, srv, dir, cacheDir, "writeback", "writeback_delay=1h")
	f, err := os.Create(m.path("truncated"))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("content a close acknowledged")
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var mappings [][]byte
	for _, name := range []string{"new", "truncated"} {
		f, err := os.OpenFile(m.path(name), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		mapping, err := syscall.Mmap(int(f.Fd()), 0, 4096, syscall.PROT_READ, syscall.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		mappings = append(mappings, mapping)
		if err := f.Close(); err != nil {
			t.Fatalf("close of %s: %v", name, err)
		}
	}
	m.kill(t)
	for _, mapping := range mappings {
		syscall.Munmap(mapping)
	}
	m = startMountAt(t, srv, dir, cacheDir, "writeback")
	m.stop(t) // drains the replayed queue
	srv.sameObject(t, "new", []byte{})
	srv.sameObject(t, "truncated", []byte{})
}

// -o cache_size bounds the staged bytes: in write-back mode writers wait
// for uploads; with nothing to wait for, a write fails with ENOSPC.
func TestCacheSizeLimit(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "writeback", "writeback_delay=0s", "cache_size=1MiB")
	src := t.TempDir()
	for i := 0; i < 8; i++ {
		writeFile(t, filepath.Join(src, fmt.Sprintf("f%d", i)), randomBytes(t, 400<<10))
	}
	run(t, "cp", "-r", src, m.path("bounded"))
	m.stop(t)
	for i := 0; i < 8; i++ {
		data, _ := os.ReadFile(filepath.Join(src, fmt.Sprintf("f%d", i)))
		srv.sameObject(t, fmt.Sprintf("bounded/f%d", i), data)
	}

	m = startMount(t, srv, "cache_size=1MiB")
	f, err := os.Create(m.path("too-big"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Write(make([]byte, 2<<20))
	f.Close()
	if errnoOf(err) != syscall.ENOSPC {
		t.Fatalf("write over the cache limit: %v, want ENOSPC", err)
	}
}

// A directory renamed while files in it are still queued moves them too.
func TestWritebackDirectoryRenameWithQueuedFiles(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "writeback", "writeback_delay=1h")
	for i := 0; i < 3; i++ {
		writeFile(t, m.path(fmt.Sprintf("dir/f%d", i)), []byte{byte('a' + i)})
	}
	if err := os.Rename(m.path("dir"), m.path("moved")); err != nil {
		t.Fatal(err)
	}
	m.stop(t)
	for i := 0; i < 3; i++ {
		srv.sameObject(t, fmt.Sprintf("moved/f%d", i), []byte{byte('a' + i)})
		if srv.exists(fmt.Sprintf("dir/f%d", i)) {
			t.Fatalf("dir/f%d left behind: %v", i, srv.keys(t))
		}
	}
}

// A file whose node the kernel forgets while its upload is still queued
// reads back from the queued content.
func TestWritebackForgottenNodeReadsQueuedContent(t *testing.T) {
	srv := startServer(t)
	srv.putByOther(t, "f.txt", []byte("old version"))
	m := startMount(t, srv, "writeback", "writeback_delay=1h", "stat_ttl=0s")
	writeFile(t, m.path("f.txt"), []byte("new version, queued"))
	if err := forgetUnusedNodes(); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(m.path("f.txt")); err != nil || string(data) != "new version, queued" {
		t.Fatalf("read after forget: %q %v", data, err)
	}
	m.stop(t)
	srv.sameObject(t, "f.txt", []byte("new version, queued"))
}

// In write-back mode mkdir journals and queues the directory's marker like
// a closed file: it returns while the server refuses every PUT, the
// directory is listed, looked up after the kernel forgot it, changed and
// removed before the marker is uploaded; unmount uploads what is left.
func TestWritebackMkdir(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "writeback", "writeback_delay=1h", "stat_ttl=0s")
	srv.AddFault(osslocal.Fault{Op: "PutObject", Status: 503})
	for _, dir := range []string{"kept", "kept/sub", "gone", "full"} {
		if err := os.Mkdir(m.path(dir), 0o755); err != nil {
			t.Fatalf("mkdir %s: %v", dir, err)
		}
	}
	writeFile(t, m.path("full/f"), []byte("queued"))
	entries, err := os.ReadDir(m.path(""))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	if strings.Join(names, ",") != "full,gone,kept" {
		t.Fatalf("readdir lists directories %v, want full,gone,kept", names)
	}
	if err := os.Remove(m.path("full")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("rmdir of a directory with a queued file: %v, want ENOTEMPTY", err)
	}
	if err := os.Remove(m.path("gone")); err != nil {
		t.Fatalf("rmdir of a directory whose marker is queued: %v", err)
	}
	if err := forgetUnusedNodes(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(m.path("kept/sub"))
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
		t.Fatalf("stat of a queued directory after forget: %v %v", fi, err)
	}
	if err := os.Chmod(m.path("kept/sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if srv.exists("kept/") || srv.exists("gone/") {
		t.Fatal("a marker was uploaded while the server refused every PUT")
	}
	srv.ClearFaults()
	m.stop(t)
	for _, key := range []string{"kept/", "kept/sub/", "full/"} {
		srv.sameObject(t, key, nil)
	}
	if srv.exists("gone/") {
		t.Fatal("the removed directory's marker was uploaded")
	}
	obj, err := srv.store.Head(testBucket, "kept/sub/")
	if err != nil || obj.Attrs.Meta["mode"] != fmt.Sprint(syscall.S_IFDIR|0o700) {
		t.Fatalf("kept/sub/ metadata %v %v, want mode %d", obj.Attrs.Meta, err, syscall.S_IFDIR|0o700)
	}
}

// mountTmpfs mounts a tmpfs of size on a new directory for the test.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Fatalf("mount a %s tmpfs: %v", size, err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// -o ensure_diskfree (ossfs, in MB): staging leaves that much of the cache
// disk free. Synchronously a write past it fails with ENOSPC; in write-back
// mode writers wait for uploads instead.
func TestEnsureDiskFree(t *testing.T) {
	srv := startServer(t)
	m := startMountAt(t, srv, t.TempDir(), mountTmpfs(t, "8m"), "ensure_diskfree=6")
	small := randomBytes(t, 1<<20)
	writeFile(t, m.path("fits"), small)
	srv.sameObject(t, "fits", small)
	err := os.WriteFile(m.path("too-big"), randomBytes(t, 3<<20), 0o644)
	if errnoOf(err) != syscall.ENOSPC {
		t.Fatalf("3 MiB with 2 MiB to spare: %v, want ENOSPC", err)
	}
	m.stop(t)

	// Write-back: ten 1 MiB files through 2 MiB of room, each close
	// acknowledged only once staged; writers wait for uploads.
	m = startMountAt(t, srv, t.TempDir(), mountTmpfs(t, "8m"), "ensure_diskfree=6", "writeback", "writeback_delay=0s")
	want := map[string][]byte{}
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("wb/f%d", i)
		want[name] = randomBytes(t, 1<<20)
		writeFile(t, m.path(name), want[name])
	}
	m.stop(t)
	for k, v := range want {
		srv.sameObject(t, k, v)
	}

	// More than the disk has free: said at the mount, not at each write.
	m = startMountAt(t, srv, t.TempDir(), mountTmpfs(t, "8m"), "ensure_diskfree=9")
	waitUntil(t, "a warning at the mount", func() bool {
		return strings.Contains(m.logs.String(), "the cache disk has less free space than ensure_diskfree")
	})
	if err := os.WriteFile(m.path("none"), []byte("x"), 0o644); errnoOf(err) != syscall.ENOSPC {
		t.Fatalf("a write with 9 MiB to keep free on 8: %v, want ENOSPC", err)
	}
}

// Without ensure_diskfree, write-back staging leaves 5% of the cache disk
// free (at most 1 GiB): a backlog waits for its uploads rather than fill
// the disk the host runs on, and no write fails.
func TestDefaultDiskReserve(t *testing.T) {
	srv := startServer(t)
	cacheDir := mountTmpfs(t, "8m")
	m := startMountAt(t, srv, t.TempDir(), cacheDir, "writeback", "writeback_delay=1h")
	size, _ := diskSpace(t, cacheDir)
	reserve := size / 20
	want := map[string][]byte{}
	for i := 0; i < 12; i++ { // 12 MiB through 8
		name := fmt.Sprintf("f%d", i)
		want[name] = randomBytes(t, 1<<20)
		writeFile(t, m.path(name), want[name])
		// A page or two of directories and records may come after the check.
		if _, free := diskSpace(t, cacheDir); free < reserve-(64<<10) {
			t.Fatalf("after %s the cache disk has %d bytes free, want about %d", name, free, reserve)
		}
	}
	m.stop(t)
	for k, v := range want {
		srv.sameObject(t, k, v)
	}

	// In sync mode staging holds only what is being written: a file that
	// leaves less than 5% of the disk free still goes.
	m = startMountAt(t, srv, t.TempDir(), mountTmpfs(t, "8m"))
	nearlyAll := randomBytes(t, 8<<20-300<<10)
	writeFile(t, m.path("nearly-all"), nearlyAll)
	srv.sameObject(t, "nearly-all", nearlyAll)
}

// diskSpace returns the size of the file system holding dir and its space
// free to users.
func diskSpace(t *testing.T, dir string) (size, free int64) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks) * st.Bsize, int64(st.Bavail) * st.Bsize
}

// A full cache disk: blocks kept for reuse (by emptied staging files and
// past the size of reused ones) are freed first; past that, a write gets
// ENOSPC, logged with its key.
func TestCacheDiskFull(t *testing.T) {
	cacheDir := mountTmpfs(t, "1m")
	srv := startServer(t)
	m := startMountAt(t, srv, t.TempDir(), cacheDir)

	a := randomBytes(t, 800<<10)
	writeFile(t, m.path("a"), a)
	srv.sameObject(t, "a", a)
	// The kernel lets the file go after close returns; then its staging
	// file is emptied, keeping its 800 KiB of blocks for the next file.
	waitForStatus(t, m, "staging_files=0")
	b, err := os.Create(m.path("b")) // reuses that file: 10 bytes and a stale tail
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() }) // before the unmount, should the test fail
	b.WriteString("0123456789")
	c := randomBytes(t, 600<<10) // fits only once the stale tail is freed
	writeFile(t, m.path("c"), c)
	srv.sameObject(t, "c", c)

	err = os.WriteFile(m.path("d"), randomBytes(t, 2<<20), 0o644)
	if errnoOf(err) != syscall.ENOSPC {
		t.Fatalf("2 MiB into a 1 MiB cache: %v, want ENOSPC", err)
	}
	// ossmount's log reaches the test through a pipe: wait for the line.
	waitUntil(t, "a log line for the failed write", func() bool {
		return strings.Contains(m.logs.String(), `msg="write failed" key=d errno="no space left on device"`)
	})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	srv.sameObject(t, "b", []byte("0123456789"))
}

// waitForStatus asks the mount for its status line (SIGUSR1) until the
// last one holds want.
func waitForStatus(t *testing.T, m *mount, want string) {
	t.Helper()
	waitUntil(t, "a status line with "+want, func() bool {
		m.cmd.Process.Signal(syscall.SIGUSR1)
		lines := strings.Split(m.logs.String(), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			if strings.Contains(lines[i], "msg=status") {
				return strings.Contains(lines[i], want)
			}
		}
		return false
	})
}

// Copies kept after an upload (cache/kept.go) give way to a writer on a
// full cache disk: its write succeeds instead of failing with ENOSPC.
func TestKeptCopiesGiveWayOnAFullDisk(t *testing.T) {
	srv := startServer(t)
	m := startMountAt(t, srv, t.TempDir(), mountTmpfs(t, "4m"))
	a := randomBytes(t, 2<<20)
	writeFile(t, m.path("a"), a)
	waitForStatus(t, m, "kept_files=1") // at a's release
	c := randomBytes(t, 3<<20)
	writeFile(t, m.path("c"), c)
	srv.sameObject(t, "c", c)
	srv.sameObject(t, "a", a)
}

// A file renamed onto an uploaded one and unlinked before its own queued
// upload ran leaves nothing: the replaced file's object is deleted too.
func TestWritebackRenameOntoUploadedThenUnlink(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "writeback", "writeback_delay=1h")
	writeFile(t, m.path("target"), []byte("uploaded"))
	run(t, "sync", m.path("target"))
	writeFile(t, m.path("source"), []byte("queued"))
	if err := os.Rename(m.path("source"), m.path("target")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(m.path("target")); err != nil {
		t.Fatal(err)
	}
	m.stop(t)
	if keys := srv.keys(t); len(keys) != 0 {
		t.Fatalf("keys left %v", keys)
	}
}

// An empty file is queued at its release, which the kernel sends without
// waiting; a rename right after the close finds the job and moves it.
func TestWritebackRenameEmptyFileRightAfterClose(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "writeback", "writeback_delay=1ms")
	if err := os.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("empty%d", i)
		f, err := os.OpenFile(m.path(name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if err := os.Rename(m.path(name), m.path("d/"+name)); err != nil {
			t.Fatalf("rename %s: %v", name, err)
		}
	}
	m.stop(t)
	for i := 0; i < 10; i++ {
		srv.sameObject(t, fmt.Sprintf("d/empty%d", i), nil)
		if srv.exists(fmt.Sprintf("empty%d", i)) {
			t.Fatalf("keys %v", srv.keys(t))
		}
	}
}

// An rmdir right after a file in the directory was closed sees the file
// wherever it is at that moment — staged, queued or in the bucket — even
// while its upload moves it from one to the next.
func TestWritebackRmdirSeesAFileBeingUploaded(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "writeback", "writeback_delay=1ms")
	for i := 0; i < 30; i++ {
		dir := fmt.Sprintf("d%d", i)
		if err := os.Mkdir(m.path(dir), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, m.path(dir+"/f"), []byte("0123456789"))
		if err := syscall.Rmdir(m.path(dir)); !errors.Is(err, syscall.ENOTEMPTY) {
			t.Fatalf("rmdir %s right after a close in it: %v, want ENOTEMPTY", dir, err)
		}
	}
	m.stop(t)
	for i := 0; i < 30; i++ {
		srv.sameObject(t, fmt.Sprintf("d%d/f", i), []byte("0123456789"))
	}
}

// A listing right after a close shows the file wherever it is at that
// moment — being written, queued or in the bucket — even while its upload
// moves it from one to the next; so does the lookup that follows.
func TestWritebackListingSeesAFileBeingUploaded(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "writeback", "writeback_delay=1ms", "stat_ttl=0s")
	for i := 0; i < 50; i++ {
		name := fmt.Sprintf("f%d", i)
		writeFile(t, m.path(name), []byte("0123456789"))
		entries, err := os.ReadDir(m.path(""))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range entries {
			found = found || e.Name() == name
		}
		if !found {
			t.Fatalf("readdir right after closing %s does not list it", name)
		}
		if _, err := os.Stat(m.path(name)); err != nil {
			t.Fatalf("stat right after the listing: %v", err)
		}
	}
}

// fsync of a directory — here `sync DIR`, as programs that save a file
// atomically do after the rename — returns once what lies below it is in
// the bucket, and the error of an upload below that failed; other
// directories' uploads stay queued. go-fuse answered EOPNOTSUPP.
func TestFsyncOfADirectory(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "writeback", "writeback_delay=1h")
	for _, d := range []string{"d", "d/sub", "e"} {
		if err := os.Mkdir(m.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string][]byte{"d/a": randomBytes(t, 3000), "d/sub/b": randomBytes(t, 70000), "e/c": randomBytes(t, 10)}
	for name, data := range want {
		writeFile(t, m.path(name), data)
	}
	// A chmod of the directory is held, then queued with its marker.
	if err := os.Chmod(m.path("d"), 0o700); err != nil {
		t.Fatal(err)
	}
	if srv.exists("d/a") || srv.exists("d/") {
		t.Fatal("uploaded before the fsync: the test shows nothing")
	}
	run(t, "sync", m.path("d"))
	if o, err := srv.store.Head(testBucket, "d/"); err != nil || o.Meta["mode"] != strconv.Itoa(syscall.S_IFDIR|0o700) {
		t.Errorf("marker d/ after the fsync: mode %q (%v), want the chmod's", o.Meta["mode"], err)
	}
	srv.sameObject(t, "d/a", want["d/a"])
	srv.sameObject(t, "d/sub/b", want["d/sub/b"])
	for _, marker := range []string{"d/", "d/sub/"} {
		if !srv.exists(marker) {
			t.Errorf("marker %s not uploaded by the fsync", marker)
		}
	}
	if srv.exists("e/c") || srv.exists("e/") {
		t.Error("the fsync of d uploaded e")
	}

	srv.AddFault(osslocal.Fault{Op: "PutObject", Status: 503})
	writeFile(t, m.path("e/bad"), []byte("refused"))
	dir, err := os.Open(m.path("e"))
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	if err := dir.Sync(); !errors.Is(err, syscall.EIO) {
		t.Errorf("fsync of a directory whose upload fails: %v, want EIO", err)
	}
	srv.ClearFaults()
	if err := dir.Sync(); err != nil {
		t.Errorf("fsync once the server takes PUTs again: %v", err)
	}
	srv.sameObject(t, "e/bad", []byte("refused"))
	srv.sameObject(t, "e/c", want["e/c"])
	// The root too, in sync mode as well.
	run(t, "sync", m.path(""))
	sm := startMount(t, srv)
	run(t, "sync", sm.path(""), sm.path("d"))
}

// Each queued upload keeps its staged file open. With more files queued
// than ossmount may open (here a limit of 256 descriptors, and every
// upload held), writers wait for uploads instead of failing with EMFILE
// — as they wait for cache space.
func TestWritebackQueueBoundedByDescriptors(t *testing.T) {
	hold := make(chan struct{})
	release := sync.OnceFunc(func() { close(hold) })
	srv := startServerWith(t, store.NewMemory(), func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/many/") {
				<-hold
			}
			h.ServeHTTP(w, r)
		})
	})
	m := startMountWithFileLimit(t, srv, 256, "writeback", "writeback_delay=0s")
	t.Cleanup(release) // before the unmount, which drains the queue
	const files = 400
	src := smallTree(t, files)
	copied := inBackground(func() error {
		if out, err := exec.Command("cp", "-r", src, m.path("many")).CombinedOutput(); err != nil {
			return fmt.Errorf("cp: %v: %s", err, out)
		}
		return nil
	})
	waitUntil(t, "a writer waiting for descriptors", func() bool {
		select {
		case err := <-copied:
			t.Fatalf("cp ended while every upload was held: %v", err)
		default:
		}
		return strings.Contains(m.logs.String(), "writers wait for uploads")
	})
	release()
	if err := <-copied; err != nil {
		t.Fatal(err)
	}
	m.stop(t)
	srv.sameTree(t, src, "many/")
}

// A journal of more files than the next mount may open is replayed all the
// same: the replay waits for uploads at the bound on staging files.
func TestWritebackReplayOfMoreFilesThanDescriptors(t *testing.T) {
	srv := startServer(t)
	dir, cacheDir := t.TempDir(), filepath.Join(t.TempDir(), "cache")
	m := startMountAt(t, srv, dir, cacheDir, "writeback", "writeback_delay=1h")
	src := smallTree(t, 300)
	run(t, "cp", "-r", src, m.path("many"))
	m.kill(t)
	m = startMountVia(t, srv, dir, cacheDir, []string{"prlimit", "--nofile=256", "--"}, "writeback")
	m.stop(t) // drains the replayed queue
	srv.sameTree(t, src, "many/")
	if strings.Contains(m.logs.String(), "level=ERROR") {
		t.Error("errors in the replay")
	}
	if !strings.Contains(m.logs.String(), "writers wait for uploads") {
		t.Error("the replay never waited for descriptors: the test needs more files")
	}
}

// smallTree makes a directory "many" of n small files, f000 on.
func smallTree(t *testing.T, n int) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "many")
	for i := range n {
		writeFile(t, filepath.Join(src, fmt.Sprintf("f%03d", i)), randomBytes(t, 100+i))
	}
	return src
}

// sameTree checks that the bucket holds every file of the flat directory
// src under prefix, byte for byte.
func (s *server) sameTree(t *testing.T, src, prefix string) {
	t.Helper()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		s.sameObject(t, prefix+e.Name(), data)
	}
}

// A file larger than the cache in write-back mode streams through it, as
// in sync mode: once the cache cannot hold it, it is uploaded while it is
// written, its uploaded parts leave the cache, and its close waits for the
// upload — it failed with ENOSPC. A version of the file closed before
// (hurried out of the full cache) does not land over it. dd opens its
// output with O_TRUNC and closes a duplicate of the descriptor before it
// writes: the close of an empty file, held until the release.
func TestWritebackFileLargerThanTheCache(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "writeback", "writeback_delay=1h", "cache_size=6MiB", "part_size=1MiB", "parallel=2")
	writeFile(t, m.path("big"), []byte("an older version, queued"))
	src := filepath.Join(t.TempDir(), "big")
	data := randomBytes(t, 40<<20)
	writeFile(t, src, data)
	run(t, "dd", "if="+src, "of="+m.path("big"), "bs=1M", "status=none")
	// In the bucket when dd's close returned, with an hour's write-back
	// delay: the close waited for it.
	srv.sameObject(t, "big", data)
	for _, line := range []string{"the cache cannot hold a file being written", "the cache is full: uploaded parts of a file being written leave it"} {
		if !m.logged(line) {
			t.Errorf("no log line %q", line)
		}
	}
	// So does a new file through dd, which closes a duplicate of its
	// descriptor before it writes: that close is of an empty file, whose
	// held upload the writer waited for, for ever.
	run(t, "dd", "if="+src, "of="+m.path("fresh"), "bs=1M", "status=none")
	srv.sameObject(t, "fresh", data)
	// An fsync completes it, as in sync mode: the object is there when
	// it returns, and what left the cache cannot be written again.
	script := `
import errno, os, sys
path, data = sys.argv[1], open(sys.argv[2], "rb").read()
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, data[:20 << 20])
os.fsync(fd)
print("fsync ok")
try:
    os.write(fd, data[20 << 20:])
    print("write ok")
except OSError as e:
    print("write", errno.errorcode[e.errno])
os.close(fd)
`
	fsynced := filepath.Join(m.dir, "fsynced")
	out := run(t, "python3", "-c", script, fsynced, src)
	if out != "fsync ok\nwrite EIO\n" {
		t.Errorf("fsync of a file streamed through, then a write:\n%s", out)
	}
	srv.sameObject(t, "fsynced", data[:20<<20])
	// Small files still go through the queue.
	writeFile(t, m.path("small"), []byte("queued"))
	if srv.exists("small") {
		t.Errorf("a small file was uploaded at its close")
	}
	m.stop(t)
	srv.sameObject(t, "big", data)
	srv.sameObject(t, "small", []byte("queued"))
	if c := srv.Counts(); c["CompleteMultipartUpload"] != 3 {
		t.Errorf("%d CompleteMultipartUpload, want 3 (big, fresh, fsynced)", c["CompleteMultipartUpload"])
	}
}

// A file streamed through the cache whose upload then fails cannot be
// queued instead — its start left the cache — so no later close of it is
// acknowledged either: each is EIO, and nothing is journaled or uploaded.
func TestWritebackFailedStreamThroughIsNeverAcknowledged(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "writeback", "cache_size=6MiB", "part_size=1MiB", "parallel=2")
	srv.AddFault(osslocal.Fault{Op: "CompleteMultipartUpload", Status: 500})
	script := `
import errno, os, sys
path = sys.argv[1]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, os.urandom(20 << 20))
for again in range(2):
    try:
        os.close(fd)
        print("ok")
    except OSError as e:
        print(errno.errorcode[e.errno])
    fd = os.open(path, os.O_WRONLY)
`
	if out := run(t, "python3", "-c", script, m.path("doomed")); out != "EIO\nEIO\n" {
		t.Errorf("closes of a file whose streamed upload failed:\n%s", out)
	}
	srv.ClearFaults()
	if err := os.Remove(m.path("doomed")); err != nil {
		t.Fatal(err)
	}
	m.stop(t)
	if srv.exists("doomed") {
		t.Errorf("the file was uploaded")
	}
}

// A queued upload that failed after the server stored its object (a CRC-64
// mismatch) leaves that object under the key until it is tried again: an
// unlink meanwhile deletes it, a rename too.
func TestWritebackUnlinkAfterAStoredFailure(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "writeback", "writeback_delay=0s")
	srv.AddFault(osslocal.Fault{Op: "PutObject", BadCRC: true})
	// Each file is changed right after its first attempt failed, a second
	// before the next.
	failedOnce := func(name string) {
		writeFile(t, m.path(name), []byte("bytes the server reports wrongly"))
		waitUntil(t, "a failed attempt", func() bool {
			return strings.Contains(m.logs.String(), `msg="write-back upload failed; retrying" key=`+name)
		})
	}
	failedOnce("damaged")
	if err := os.Remove(m.path("damaged")); err != nil {
		t.Fatal(err)
	}
	if srv.exists("damaged") {
		t.Errorf("the object of the failed attempt outlived the unlink")
	}
	// A rename of the queued file moves the queued upload and deletes
	// what the attempt left under the old name.
	failedOnce("moved")
	if err := os.Rename(m.path("moved"), m.path("moved-to")); err != nil {
		t.Fatal(err)
	}
	if srv.exists("moved") {
		t.Errorf("the object of the failed attempt outlived the rename")
	}
	srv.ClearFaults()
	m.stop(t)
	if srv.exists("damaged") || srv.exists("moved") {
		t.Errorf("keys %v", srv.keys(t))
	}
	srv.sameObject(t, "moved-to", []byte("bytes the server reports wrongly"))
}
