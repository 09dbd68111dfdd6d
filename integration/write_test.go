package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ossmount/ossmount/bucket/store"
	"github.com/ossmount/ossmount/integration/osslocal"
)

// DESIGN §2: files copied in become objects, byte for byte.
func TestCopyFiles(t *testing.T) {
	srv := startDiskServer(t)
	// Copies kept after the upload hold at most 75 MiB: the 1 MiB file
	// is kept, the 100 MiB one is not.
	m := startMount(t, srv, "cache_size=150MiB")
	src := t.TempDir()
	for name, size := range map[string]int{"one-mib.bin": 1 << 20, "hundred-mib.bin": 100 << 20} {
		data := randomBytes(t, size)
		writeFile(t, filepath.Join(src, name), data)
		run(t, "cp", filepath.Join(src, name), m.path(name))
		srv.sameObject(t, name, data)
	}
	// Reading back through the mount returns the same bytes: from the
	// kept copy, or by ranged GETs with read-ahead, whose ranges double
	// from 1 MiB to 64 MiB: 7 for 100 MiB (1+2+4+8+16+32+37). The kernel's
	// reads arrive slightly out of order; one ranged GET per MiB, when
	// a range that ended or a read skipped over started the ranges over.
	for name, most := range map[string]int{"one-mib.bin": 0, "hundred-mib.bin": 7} {
		before := srv.Count("GetObject")
		run(t, "cmp", filepath.Join(src, name), m.path(name))
		if gets := srv.Count("GetObject") - before; gets > most || most > 0 && gets == 0 {
			t.Errorf("%s read back with %d GETs, want %d at most (and at least one if any)", name, gets, most)
		}
	}
}

func TestCopyTree(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	src := filepath.Join(t.TempDir(), "tree")
	want := map[string][]byte{}
	for i := 0; i < 200; i++ {
		rel := fmt.Sprintf("d%d/e%d/f%03d.txt", i%4, i%7, i)
		data := randomBytes(t, 100+i*37)
		writeFile(t, filepath.Join(src, rel), data)
		want["tree/"+rel] = data
	}
	run(t, "cp", "-r", src, m.path(""))
	for key, data := range want {
		srv.sameObject(t, key, data)
	}
	files := 0
	for _, k := range srv.keys(t) {
		if !strings.HasSuffix(k, "/") {
			files++
		}
	}
	if files != 200 {
		t.Fatalf("%d file objects, want 200", files)
	}
	if !srv.exists("tree/d0/e0/") {
		t.Fatalf("no directory marker for tree/d0/e0/")
	}
	// The tree reads back the same through the mount.
	run(t, "diff", "-r", src, m.path("tree"))
}

func TestShellRedirectDdTouchOverwrite(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)

	// One close cycle is one upload: the shell closes a dup of the new
	// descriptor before echo writes, and that must not upload.
	run(t, "sh", "-c", "echo x > "+m.path("echo.txt"))
	srv.sameObject(t, "echo.txt", []byte("x\n"))
	if n := srv.Count("PutObject"); n != 1 {
		t.Fatalf("echo > f made %d PutObject requests, want 1", n)
	}

	run(t, "dd", "if=/dev/urandom", "of="+m.path("dd.bin"), "bs=64k", "count=40", "status=none")
	local, err := os.ReadFile(m.path("dd.bin"))
	if err != nil || len(local) != 40*64<<10 {
		t.Fatalf("read back dd.bin: %d bytes, %v", len(local), err)
	}
	srv.sameObject(t, "dd.bin", local)

	// touch makes a zero-byte object; sync FILE is the program's way to
	// wait until it is in the bucket (fsync).
	run(t, "touch", m.path("empty"))
	run(t, "sync", m.path("empty"))
	srv.sameObject(t, "empty", nil)

	// Overwrite replaces the object.
	src := filepath.Join(t.TempDir(), "new")
	newData := randomBytes(t, 3000)
	writeFile(t, src, newData)
	run(t, "cp", src, m.path("echo.txt"))
	srv.sameObject(t, "echo.txt", newData)
}

// DESIGN §1: names that break OSS rules are refused before anything is
// sent, with the errno of the table and a warn line quoting the name.
func TestIllegalNames(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)

	// A directory chain whose last file key is exactly 1,024 bytes.
	dir := strings.Repeat("d", 200) + "/" + strings.Repeat("e", 200) + "/" + strings.Repeat("f", 200) + "/" + strings.Repeat("g", 200)
	if err := os.MkdirAll(m.path(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	longName := strings.Repeat("x", 1024-len(dir)-1)
	puts := srv.Count("PutObject")

	for _, tc := range []struct {
		name string
		path string
		want syscall.Errno
	}{
		{"not UTF-8", m.path("bad\xff\xfename"), syscall.EINVAL},
		{"leading backslash at the root", m.path(`\lead`), syscall.EINVAL},
		{"1,024-byte key", m.path(dir + "/" + longName), syscall.ENAMETOOLONG},
	} {
		fd, err := syscall.Open(tc.path, syscall.O_CREAT|syscall.O_WRONLY, 0o644)
		if err == nil {
			syscall.Close(fd)
		}
		if errnoOf(err) != tc.want {
			t.Errorf("%s: open = %v, want %v", tc.name, err, tc.want)
		}
		if err := syscall.Mkdir(tc.path, 0o755); errnoOf(err) != tc.want {
			t.Errorf("%s: mkdir = %v, want %v", tc.name, err, tc.want)
		}
	}
	// A 1,023-byte key is fine.
	okPath := m.path(dir + "/" + longName[1:])
	if err := os.WriteFile(okPath, []byte("ok"), 0o644); err != nil {
		t.Fatalf("1,023-byte key: %v", err)
	}
	if got := srv.Count("PutObject") - puts; got != 1 {
		t.Fatalf("%d PutObject requests, want only the valid one", got)
	}
	for _, k := range srv.keys(t) {
		if strings.Contains(k, "bad") || strings.Contains(k, "lead") {
			t.Fatalf("object %q was created", k)
		}
	}
	// The warn line quotes the key with %q (and the log format escapes
	// that once more).
	for _, key := range []string{"bad\xff\xfename", `\lead`} {
		want := strings.Trim(strconv.Quote(strconv.Quote(key)), `"`)
		waitUntil(t, fmt.Sprintf("a log line quoting %q", key), func() bool { return strings.Contains(m.logs.String(), want) })
	}
}

// DESIGN §2, the dup/fork rule: closing a dup or a child's copy of a
// descriptor must not upload unchanged data again.
func TestDupAndForkUploadOnce(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)

	f, err := os.Create(m.path("dup.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("written once"); err != nil {
		t.Fatal(err)
	}
	dup, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Close(dup); err != nil {
		t.Fatalf("close dup: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	srv.sameObject(t, "dup.txt", []byte("written once"))
	if n := srv.Count("PutObject"); n != 1 {
		t.Fatalf("%d PutObject requests, want 1", n)
	}

	// A child inherits the descriptor and exits (closing it) after the
	// write; the parent closes last.
	script := fmt.Sprintf("exec 3>%s; echo forked >&3; /bin/true; exec 3>&-", m.path("fork.txt"))
	run(t, "bash", "-c", script)
	srv.sameObject(t, "fork.txt", []byte("forked\n"))
	if n := srv.Count("PutObject"); n != 2 {
		t.Fatalf("%d PutObject requests after the fork case, want 2", n)
	}
}

// DESIGN §3: an upload error is close's error, and the staged data is kept
// so that a later close uploads it.
func TestUploadFailureIsCloseError(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	srv.AddFault(faultPut500)

	f, err := os.Create(m.path("fails.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("keep me"); err != nil {
		t.Fatal(err)
	}
	err = f.Close()
	if errnoOf(err) != syscall.EIO {
		t.Fatalf("close = %v, want EIO", err)
	}
	if srv.exists("fails.txt") {
		t.Fatal("object exists although every PutObject failed")
	}
	// The line is written before close returns; reading ossmount's stderr
	// may lag behind.
	waitUntil(t, "a log line naming the key", func() bool { return strings.Contains(m.logs.String(), `key=fails.txt`) })
	// cp reports the failure too.
	out, err := exec.Command("cp", "/etc/hostname", m.path("cp-fails")).CombinedOutput()
	if err == nil {
		t.Fatalf("cp succeeded although the upload failed: %s", out)
	}

	srv.ClearFaults()
	f, err = os.OpenFile(m.path("fails.txt"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(", and this"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close after recovery: %v", err)
	}
	srv.sameObject(t, "fails.txt", []byte("keep me, and this"))
}

// An upload left to the release — a new empty file's (touch, whose close
// uploads nothing, see TestShellRedirectDdTouchOverwrite) — that fails is
// tried again until it lands, and at the unmount at the latest (the second
// file: whichever comes first): touch was told the file was made. It
// stayed in the mount's memory, and went nowhere.
func TestFailedUploadAtReleaseIsTriedAgain(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	srv.AddFault(faultPut500)
	for _, name := range []string{"again", "at-unmount"} {
		run(t, "touch", m.path(name))
		waitUntil(t, "the release's upload of "+name+" to fail", func() bool {
			return strings.Contains(m.logs.String(), "upload at release failed") && strings.Contains(m.logs.String(), "key="+name)
		})
		if name == "again" {
			srv.ClearFaults()
			waitUntil(t, "the file to land", func() bool { return srv.exists(name) })
		}
	}
	srv.ClearFaults()
	m.stop(t)
	srv.sameObject(t, "again", nil)
	srv.sameObject(t, "at-unmount", nil)
}

// A file whose upload at release failed is still there after the kernel
// forgets its node: a lookup, a listing and rmdir of its directory see it,
// and a program that writes the name again writes that file — neither the
// retry nor the unmount replaces what it wrote with the empty file. (The
// kernel's forgetting made the file vanish until its retry landed, and the
// forgotten node's retry overwrote the new content.)
func TestForgottenFileAwaitingItsRetryIsStillThere(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "stat_ttl=0s")
	if err := os.Mkdir(m.path("dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	srv.AddFault(faultPut500)
	run(t, "touch", m.path("dir/touched"))
	if !m.logged("upload at release failed") {
		t.Fatal("the release's upload did not fail")
	}
	if err := forgetUnusedNodes(); err != nil {
		t.Fatal(err)
	}
	if !m.logged("the kernel forgot a file not uploaded yet; kept in the tree") {
		t.Fatal("the kernel's forgetting of the touched file was not seen")
	}
	if fi, err := os.Stat(m.path("dir/touched")); err != nil || fi.Size() != 0 {
		t.Fatalf("stat after the kernel forgot the file: %v %v", fi, err)
	}
	if out := run(t, "ls", m.path("dir")); out != "touched\n" {
		t.Fatalf("ls after the kernel forgot the file: %q", out)
	}
	if err := os.Remove(m.path("dir")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("rmdir of the file's directory: %v, want ENOTEMPTY", err)
	}
	srv.ClearFaults()
	writeFile(t, m.path("dir/touched"), []byte("written after"))
	m.stop(t)
	srv.sameObject(t, "dir/touched", []byte("written after"))
}

// DESIGN §3: a transient failure is never taken for "not found": a HEAD
// that keeps failing with 503 is EIO, and creating the file then does not
// replace the object with an empty one.
func TestTransientLookupFailureIsNotENOENT(t *testing.T) {
	srv := startServer(t)
	srv.putByOther(t, "precious.txt", []byte("keep me"))
	m := startMount(t, srv, "stat_ttl=0s")
	srv.AddFault(osslocal.Fault{Op: "HeadObject", Status: 503})
	if _, err := os.Stat(m.path("precious.txt")); errnoOf(err) != syscall.EIO {
		t.Fatalf("stat during 503s: %v, want EIO", err)
	}
	f, err := os.OpenFile(m.path("precious.txt"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err == nil {
		f.Close()
		t.Fatal("open for append succeeded without knowing the object")
	}
	srv.ClearFaults()
	srv.sameObject(t, "precious.txt", []byte("keep me"))
	if data, err := os.ReadFile(m.path("precious.txt")); err != nil || string(data) != "keep me" {
		t.Fatalf("after recovery: %q %v", data, err)
	}
}

// A connection cut mid-body is retried by the SDK: close succeeds and the
// object is whole; cut every time, close is EIO and nothing torn lands.
func TestDroppedConnections(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	data := randomBytes(t, 300<<10)
	srv.AddFault(osslocal.Fault{Op: "PutObject", Cut: true, Count: 1})
	writeFile(t, m.path("retried.bin"), data)
	srv.sameObject(t, "retried.bin", data)

	srv.ClearFaults()
	srv.AddFault(osslocal.Fault{Op: "PutObject", Cut: true})
	f, err := os.Create(m.path("cut.bin"))
	if err != nil {
		t.Fatal(err)
	}
	f.Write(data)
	if err := f.Close(); errnoOf(err) != syscall.EIO {
		t.Fatalf("close with every connection cut: %v, want EIO", err)
	}
	if srv.exists("cut.bin") {
		t.Fatal("a torn upload landed")
	}
	srv.ClearFaults()

	// A completion's reply lost: the SDK sends it again, to an upload the
	// server has completed. Streamed (cp writes in order) and whole (a
	// write behind the parts sent): close says 0, and the object is whole.
	// Close said ENOENT ("NoSuchUpload"), and a stream sent the file again.
	m2 := startMount(t, srv, "part_size=1MiB")
	big := randomBytes(t, 3<<20+5)
	srv.AddFault(osslocal.Fault{Op: "CompleteMultipartUpload", LoseReply: true, Count: 1})
	started := srv.Count("InitiateMultipartUpload")
	writeFile(t, m2.path("streamed.bin"), big)
	srv.sameObject(t, "streamed.bin", big)
	if n := srv.Count("InitiateMultipartUpload") - started; n != 1 {
		t.Errorf("%d multipart uploads for one streamed file, want 1 (not the whole file again)", n)
	}
	srv.ClearFaults()
	srv.AddFault(osslocal.Fault{Op: "CompleteMultipartUpload", LoseReply: true, Count: 1})
	f, err = os.Create(m2.path("whole.bin"))
	if err != nil {
		t.Fatal(err)
	}
	f.Write(big)
	f.WriteAt([]byte("behind"), 10)
	if err := f.Close(); err != nil {
		t.Fatalf("close of a whole upload whose completion's reply was lost: %v", err)
	}
	copy(big[10:], "behind")
	srv.sameObject(t, "whole.bin", big)
	srv.ClearFaults()
}

// DESIGN §2: the CRC64 the server returns is checked; a mismatch fails the
// A download whose connection breaks in the middle of a body (the SDK
// retries requests, not the reading of their bodies) goes on from where it
// stopped: the file reads back whole. It read back short, with no error,
// as if the file ended there.
func TestDroppedConnectionWhileReading(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	data := randomBytes(t, 3<<20)
	old, replacement := randomBytes(t, 614700), randomBytes(t, 614700)
	srv.putByOther(t, "big.bin", data)
	srv.putByOther(t, "other.bin", data)
	// Before the mount lists the directory: a name another client adds
	// shows only after stat_ttl.
	srv.putByOther(t, "swapped.bin", old)
	srv.AddFault(osslocal.Fault{Op: "GetObject", CutBody: true, Count: 2})
	// O_DIRECT: reads in order, one at a time. The kernel's read-ahead
	// could start over in a new stream before a broken one reached its
	// break (2 in 90 runs).
	got, err := readDirect(m.path("big.bin"))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, not the object's %d", len(got), len(data))
	}
	waitUntil(t, "a log line for the broken download", func() bool {
		return strings.Contains(m.logs.String(), "a download broke; asking for the rest")
	})

	// The same for the copy into staging of an open for writing.
	srv.ClearFaults()
	srv.AddFault(osslocal.Fault{Op: "GetObject", CutBody: true, Count: 2})
	editAt(t, m.path("big.bin"), 1<<20, []byte("EDIT"))
	copy(data[1<<20:], "EDIT")
	srv.sameObject(t, "big.bin", data)

	// Broken every time, the read fails with EIO.
	srv.ClearFaults()
	srv.AddFault(osslocal.Fault{Op: "GetObject", CutBody: true})
	if _, err := os.ReadFile(m.path("other.bin")); errnoOf(err) != syscall.EIO {
		t.Fatalf("read with every download broken: %v, want EIO", err)
	}

	// Replaced by another client while its download was broken, the
	// object is not read as the old version's first half and the new
	// one's second: that read fails with EIO, and the next one has the
	// new version. O_DIRECT: one read, which the kernel's read-ahead
	// does not split; the break (half the body) is inside it.
	srv.ClearFaults()
	srv.AddFault(osslocal.Fault{Op: "GetObject", CutBody: true, Count: 1, OnCut: func() { srv.putByOther(t, "swapped.bin", replacement) }})
	g, err := os.OpenFile(m.path("swapped.bin"), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	buf := make([]byte, 1<<20)
	if n, err := g.ReadAt(buf, 0); errnoOf(err) != syscall.ESTALE {
		t.Fatalf("read of an object replaced while its download was broken: %d bytes, %v; want ESTALE (old version's first half: %v, new version's second: %v)",
			n, err, bytes.Equal(buf[:1000], old[:1000]), bytes.Equal(buf[n-1000:n], replacement[n-1000:n]))
	}
	// The line was written before the read's reply; the pipe may still hold it.
	waitUntil(t, "a log line for the object changed while it was read", func() bool {
		return strings.Contains(m.logs.String(), "object changed while it was read")
	})
	if n, err := g.ReadAt(buf, 0); n != len(replacement) || !bytes.Equal(buf[:n], replacement) {
		t.Fatalf("read again: %d bytes, %v, the new version: %v", n, err, bytes.Equal(buf[:n], replacement))
	}
	srv.ClearFaults()
}

// readDirect reads a file whole, in order, 1 MiB at a time with O_DIRECT
// (no read-ahead of the kernel's).
func readDirect(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var all []byte
	buf := make([]byte, 1<<20)
	for {
		n, err := f.Read(buf)
		all = append(all, buf[:n]...)
		if err == io.EOF {
			return all, nil
		}
		if err != nil {
			return all, err
		}
	}
}

// An object another client replaces while the mount copies it into
// staging for an edit (8 MiB at a time) is not copied as the old
// version's first chunk and the new one's second, to be uploaded at the
// close as a file nobody wrote: the open fails with ESTALE, on which the
// kernel looks the name up and opens it once more — and that open copies
// the new version, which the edit then changes.
func TestObjectReplacedWhileCopiedForEditing(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	old, replacement := randomBytes(t, 9<<20), randomBytes(t, 9<<20)
	srv.putByOther(t, "edit.bin", old)
	srv.AddFault(osslocal.Fault{Op: "GetObject", After: 1, Count: 1, Before: func() { srv.putByOther(t, "edit.bin", replacement) }})
	f, err := os.OpenFile(m.path("edit.bin"), os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open of an object replaced during its copy, tried again by the kernel: %v", err)
	}
	if _, err := f.WriteAt([]byte("EDIT"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if srv.Count("GetObject") < 3 {
		t.Fatal("the first copy did not ask for a second chunk: the test missed its case")
	}
	waitUntil(t, "the warn line of the failed open", func() bool { return strings.Contains(m.logs.String(), "object changed while it was read") })
	srv.sameObject(t, "edit.bin", append([]byte("EDIT"), replacement[4:]...))
}

// An object another client made longer since the mount learned its size
// is copied whole into staging for an edit: the copy stopped at the old
// size, and the edit's close put the object back without its new end.
// stat_ttl=1h: the kernel asks for no new lookup before the open.
func TestObjectGrownBeforeEdit(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "stat_ttl=1h")
	srv.putByOther(t, "grown.bin", randomBytes(t, 1<<20))
	if fi, err := os.Stat(m.path("grown.bin")); err != nil || fi.Size() != 1<<20 {
		t.Fatalf("stat: %v", err)
	}
	grown := randomBytes(t, 10<<20) // two chunks of the copy
	srv.putByOther(t, "grown.bin", grown)
	editAt(t, m.path("grown.bin"), 0, []byte("EDIT"))
	copy(grown, "EDIT")
	srv.sameObject(t, "grown.bin", grown)

	// The same for an object that was empty.
	srv.putByOther(t, "was-empty", nil)
	if fi, err := os.Stat(m.path("was-empty")); err != nil || fi.Size() != 0 {
		t.Fatalf("stat: %v", err)
	}
	srv.putByOther(t, "was-empty", []byte("content"))
	editAt(t, m.path("was-empty"), 0, []byte("C"))
	srv.sameObject(t, "was-empty", []byte("Content"))
}

// The copy of a large object into staging for an edit asks for its 8 MiB
// chunks `parallel` at a time, each of the first one's version: the GET of
// the third chunk arrives while the second's is held. A connection broken
// in one of them goes on from where it stopped, and the object lands with
// the edit, byte for byte.
func TestEditOfALargeObjectReadsItInParallel(t *testing.T) {
	const chunk = 8 << 20
	rangeFrom := func(r *http.Request, off int) bool {
		return r.Method == http.MethodGet && strings.HasPrefix(r.Header.Get("Range"), fmt.Sprintf("bytes=%d-", off))
	}
	var third atomic.Bool
	wrap, started, release := holdFirst(func(r *http.Request) bool { return rangeFrom(r, chunk) })
	srv := startServerWith(t, store.NewMemory(), func(h http.Handler) http.Handler {
		held := wrap(h)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if rangeFrom(r, 2*chunk) {
				third.Store(true)
			}
			held.ServeHTTP(w, r)
		})
	})
	m := startMount(t, srv, "parallel=3")
	t.Cleanup(release)
	data := randomBytes(t, 5*chunk+12345)
	srv.putByOther(t, "large.bin", data)
	srv.AddFault(osslocal.Fault{Op: "GetObject", CutBody: true, After: 3, Count: 1})
	edited := inBackground(func() error {
		f, err := os.OpenFile(m.path("large.bin"), os.O_RDWR, 0)
		if err != nil {
			return err
		}
		if _, err := f.WriteAt([]byte("EDIT"), 3*chunk+7); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
	<-started
	waitUntil(t, "the third chunk asked for while the second is held", third.Load)
	release()
	if err := <-edited; err != nil {
		t.Fatal(err)
	}
	copy(data[3*chunk+7:], "EDIT")
	srv.sameObject(t, "large.bin", data)
	if !strings.Contains(m.logs.String(), "a download broke; asking for the rest") {
		t.Error("no chunk's connection was broken: the test missed its case")
	}
}

// An object another client makes shorter while a program reads it through
// the mount fails the open file's next request (it reads one version), and
// reads through a new open as ending where it now ends, though the mount
// still knows the old size: a read past the new end got the object from
// its start (OSS's default answer to a range past the end), as if those
// bytes were there.
func TestObjectShortenedWhileRead(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	srv.putByOther(t, "s", randomBytes(t, 3<<20))
	f, err := os.Open(m.path("s"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	srv.putByOther(t, "s", []byte("short"))
	if _, err := f.ReadAt(buf, 2<<20); errnoOf(err) != syscall.ESTALE {
		t.Fatalf("read at 2 MiB of an open file whose object another client replaced: %v, want ESTALE", err)
	}
	readPastTheEnd(t, m.path("s"), buf, 2<<20)

	// Opened for writing, the file is what the object holds now: the copy
	// into staging stopped at the object's new end, the file kept its old
	// size, and the edit's close failed EIO (the upload sent fewer bytes
	// than it announced).
	editAt(t, m.path("s"), 0, []byte("S"))
	srv.sameObject(t, "s", []byte("Short"))

	// The same when the read skips ahead in its stream, which breaks, and
	// the rest of the range asked for again is of another version.
	srv.putByOther(t, "t", randomBytes(t, 3<<20))
	srv.AddFault(osslocal.Fault{Op: "GetObject", CutBody: true, Count: 1}) // at 512 KiB of the first 1 MiB
	// O_DIRECT: no read-ahead of the kernel's reaches the break first.
	g, err := os.OpenFile(m.path("t"), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	srv.putByOther(t, "t", []byte("short"))
	if _, err := g.ReadAt(buf, 600<<10); errnoOf(err) != syscall.ESTALE {
		t.Fatalf("read at 600 KiB of an open file whose object another client replaced: %v, want ESTALE", err)
	}
	waitUntil(t, "a log line for the broken stream (none: the test missed its case)", func() bool {
		return strings.Contains(m.logs.String(), "a download broke; asking for the rest")
	})
	readPastTheEnd(t, m.path("t"), buf, 600<<10)
}

// readPastTheEnd reads at off through a new open of path, whose object is
// now 5 bytes long: nothing, and EOF.
func readPastTheEnd(t *testing.T, path string, buf []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := f.ReadAt(buf, off); n != 0 || err != io.EOF {
		t.Fatalf("read at %d of an object now 5 bytes long: %q, %v; want nothing, EOF", off, buf[:n], err)
	}
}

// A read that finds the object replaced by another client, shorter or
// longer, takes the new size at once, and so does the kernel. The kernel
// kept the old size until the stat TTL ran out: a reader got the new
// content cut at the old size, or zeros up to it when a getattr raced the
// short read that would have told the kernel where the file ends (a flaky
// TestKeptCopyServesEditsAndReads).
func TestReadTakesTheSizeOfAReplacedObject(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "stat_ttl=1h")
	for _, c := range []struct {
		name     string
		old, now int
	}{{"shorter", 3 << 20, 1<<20 + 5}, {"longer", 1<<20 + 5, 3 << 20}} {
		old, now := randomBytes(t, c.old), randomBytes(t, c.now)
		srv.putByOther(t, c.name, old)
		if fi, err := os.Stat(m.path(c.name)); err != nil || fi.Size() != int64(len(old)) {
			t.Fatalf("%s: stat before: %v %v", c.name, fi, err)
		}
		srv.putByOther(t, c.name, now)
		f, err := os.Open(m.path(c.name))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, now[:len(buf)]) {
			t.Fatalf("%s: first read: %v", c.name, err)
		}
		if fi, err := f.Stat(); err != nil || fi.Size() != int64(len(now)) {
			t.Errorf("%s: the size after a read of the new object: %v %v, want %d", c.name, fi.Size(), err, len(now))
		}
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil || !bytes.Equal(got, now) {
			t.Errorf("%s: read %d bytes (%v), want the new object's %d", c.name, len(got), err, len(now))
		}
	}
}

// A program reading a file in order finds the next range asked for ahead:
// its GET reaches the server while the range before it still has most of
// its body to send (from ranges of 4 MiB on). It waited for each range's
// first byte, a round trip and the server's lookup.
func TestSequentialReadAsksAhead(t *testing.T) {
	type sending struct{ length, written int64 }
	var mu sync.Mutex
	byEnd := map[int64]*sending{} // by the offset after the range
	var mostLeft int64            // of the range before a GET, when it came
	wrap := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var from, to int64
			if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/seq.bin") {
				h.ServeHTTP(w, r)
				return
			}
			if n, _ := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &from, &to); n != 2 {
				h.ServeHTTP(w, r)
				return
			}
			s := &sending{length: to - from + 1}
			mu.Lock()
			if before := byEnd[from]; before != nil {
				mostLeft = max(mostLeft, before.length-before.written)
			}
			byEnd[to+1] = s
			mu.Unlock()
			h.ServeHTTP(countingWriter{w, func(n int) { mu.Lock(); s.written += int64(n); mu.Unlock() }}, r)
		})
	}
	srv := startServerWith(t, store.NewMemory(), wrap)
	m := startMount(t, srv)
	data := randomBytes(t, 100<<20)
	srv.putByOther(t, "seq.bin", data)
	got, err := os.ReadFile(m.path("seq.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (%v), want the object's %d", len(got), err, len(data))
	}
	mu.Lock()
	defer mu.Unlock()
	if mostLeft < 8<<20 {
		t.Errorf("a range's GET came when the one before had at most %d bytes left to send: not asked ahead", mostLeft)
	}
}

// countingWriter tells counted how many body bytes each write sent.
type countingWriter struct {
	http.ResponseWriter
	counted func(int)
}

func (w countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.counted(n)
	return n, err
}

// Reads that arrive slightly out of order, as the kernel's read-ahead
// sends them, are served from the ranged GETs of a reader in order: what a
// read skipped over is kept for the read behind it, and so is the rest of
// a range when a read past its end comes first. They started the range
// over, at its smallest.
func TestReadsOutOfOrderAskNothingAgain(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	data := randomBytes(t, 2<<20)
	srv.putByOther(t, "o", data)
	f, err := os.OpenFile(m.path("o"), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	before := srv.Count("GetObject")
	buf := make([]byte, 128<<10)
	for _, off := range []int{0, 512 << 10, 128 << 10, 256 << 10, 640 << 10} {
		if _, err := f.ReadAt(buf, int64(off)); err != nil || !bytes.Equal(buf, data[off:off+len(buf)]) {
			t.Fatalf("read at %d: %v (the right bytes: %v)", off, err, bytes.Equal(buf, data[off:off+len(buf)]))
		}
	}
	if gets := srv.Count("GetObject") - before; gets != 1 {
		t.Errorf("%d GETs for reads within the first 1 MiB, want 1", gets)
	}
	// Across the range's end: a read past it is served from the next
	// range (from its start, the first 1 MiB's end), and the reads left
	// behind on either side of the end from what both ranges sent.
	for _, off := range []int{1<<20 + 128<<10, 896 << 10, 768 << 10, 1 << 20, 1<<20 + 256<<10} {
		if _, err := f.ReadAt(buf, int64(off)); err != nil || !bytes.Equal(buf, data[off:off+len(buf)]) {
			t.Fatalf("read at %d: %v (the right bytes: %v)", off, err, bytes.Equal(buf, data[off:off+len(buf)]))
		}
	}
	if gets := srv.Count("GetObject") - before; gets != 2 {
		t.Errorf("%d GETs for reads within the first 1 MiB and the next, want 2", gets)
	}
}

// Reads through one open file are of one version. Another client's
// replacement fails the handle's next request (ESTALE, with a warn line)
// instead of handing the reader the new version's bytes after the old
// one's; a new open reads the new version. A metadata change through this
// mount, a copy of the object onto itself (a new ETag for an object
// uploaded in parts), replaces no bytes and fails nothing.
func TestReadsThroughOneOpenFileAreOfOneVersion(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "stat_ttl=1h")
	old, now := randomBytes(t, 4<<20), randomBytes(t, 4<<20)
	srv.putByOther(t, "replaced", old)
	buf := make([]byte, 64<<10)
	f, err := os.OpenFile(m.path("replaced"), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, old[:len(buf)]) {
		t.Fatalf("first read: %v", err)
	}
	srv.putByOther(t, "replaced", now)
	// Past the first request's range: a new GET.
	if _, err := f.ReadAt(buf, 2<<20); errnoOf(err) != syscall.ESTALE {
		t.Fatalf("a read after another client replaced the object: %v (new bytes: %v), want ESTALE", err, bytes.Equal(buf, now[2<<20:2<<20+len(buf)]))
	}
	waitUntil(t, "a warn line naming the key", func() bool {
		return strings.Contains(m.logs.String(), "object changed while it was read") && strings.Contains(m.logs.String(), "key=replaced")
	})
	if got, err := readDirect(m.path("replaced")); err != nil || !bytes.Equal(got, now) {
		t.Errorf("a new open read %d bytes (%v), want the new version's %d", len(got), err, len(now))
	}

	// An object in two parts, its ETag not its bytes' MD5: a copy onto
	// itself changes it.
	data := randomBytes(t, 4<<20)
	id, err := srv.store.InitiateMultipart(testBucket, "parts", store.Attrs{})
	if err != nil {
		t.Fatal(err)
	}
	var parts []store.PartInfo
	for i := range 2 {
		p, err := srv.store.UploadPart(testBucket, id, i+1, bytes.NewReader(data[i<<21:(i+1)<<21]))
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, p)
	}
	if _, err := srv.store.CompleteMultipart(testBucket, id, parts, "", false); err != nil {
		t.Fatal(err)
	}
	before, _ := srv.store.Head(testBucket, "parts")
	g, err := os.OpenFile(m.path("parts"), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data[:len(buf)]) {
		t.Fatalf("first read of the object in parts: %v", err)
	}
	if err := os.Chmod(m.path("parts"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.Sync(); err != nil { // sends the held metadata change
		t.Fatal(err)
	}
	if after, _ := srv.store.Head(testBucket, "parts"); after.ETag == before.ETag {
		t.Fatalf("the chmod's copy left the ETag %s: this test tests nothing", after.ETag)
	}
	for _, off := range []int{len(buf), 2 << 20} { // in the first request's range, then past it
		if _, err := g.ReadAt(buf, int64(off)); err != nil || !bytes.Equal(buf, data[off:off+len(buf)]) {
			t.Errorf("a read at %d after a chmod through the mount: %v, want the same bytes", off, err)
		}
	}
}

// upload, so close is EIO.
func TestCRCMismatchIsCloseError(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	// Damaged once, the upload is sent again (the SDK's retry: the
	// mismatch is the response's error) and close succeeds.
	srv.AddFault(osslocal.Fault{Op: "PutObject", BadCRC: true, Count: 1})
	writeFile(t, m.path("damaged once"), []byte("bytes damaged on the way, once"))
	srv.sameObject(t, "damaged once", []byte("bytes damaged on the way, once"))

	srv.ClearFaults()
	srv.AddFault(osslocal.Fault{Op: "PutObject", BadCRC: true})
	f, err := os.Create(m.path("damaged"))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("bytes the server reports wrongly")
	if err := f.Close(); errnoOf(err) != syscall.EIO {
		t.Fatalf("close with a CRC mismatch: %v, want EIO", err)
	}
	waitUntil(t, "a log line naming the key", func() bool { return strings.Contains(m.logs.String(), "key=damaged") })
	srv.ClearFaults()
}

// A signal to a program blocked in close does not cut the upload short:
// the kernel turns it into a FUSE interrupt, and Go programs get signals
// (SIGURG) all the time. close waits for the upload and returns 0.
func TestCloseNotInterruptedBySignal(t *testing.T) {
	srv := startServer(t)
	srv.AddFault(osslocal.Fault{Op: "PutObject", Stall: 300 * time.Millisecond, Count: 1})
	m := startMount(t, srv)
	f, err := os.Create(m.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(t, 100<<10)
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1) // caught, so it interrupts close instead of killing
	defer signal.Stop(sigs)
	tids, done := make(chan int), make(chan error)
	go func() {
		runtime.LockOSThread() // stays locked: the thread ends with the goroutine
		tids <- syscall.Gettid()
		done <- f.Close()
	}()
	tid := <-tids
	waitUntil(t, "the upload at close to reach the server", func() bool { return srv.Count("PutObject") > 0 })
	if err := syscall.Tgkill(os.Getpid(), tid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("close interrupted by a signal: %v", err)
	}
	srv.sameObject(t, "f", data)
}

// An unlink while another process's close uploads the file waits for that
// upload, then deletes its object: the file does not come back.
func TestUnlinkWhileCloseUploads(t *testing.T) {
	srv, m, started, release := mountHoldingPut(t, "busy")
	closed := inBackground(func() error { return os.WriteFile(m.path("busy"), []byte("content"), 0o644) })
	<-started
	err := whileUploadHeld(t, m, `msg="a removal waits for the file's upload in progress" key=busy`, release,
		func() error { return os.Remove(m.path("busy")) })
	if err != nil {
		t.Fatalf("unlink: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("close: %v", err)
	}
	if srv.exists("busy") {
		t.Fatal("the unlinked file's object came back")
	}
}

// A rename onto a file whose close is uploading waits for that upload (as
// an unlink does): the replaced content does not land over the renamed
// file.
func TestRenameOntoFileWhileCloseUploads(t *testing.T) {
	srv, m, started, release := mountHoldingPut(t, "target")
	writeFile(t, m.path("source"), []byte("renamed over it"))
	closed := inBackground(func() error { return os.WriteFile(m.path("target"), []byte("replaced"), 0o644) })
	<-started
	err := whileUploadHeld(t, m, `msg="a removal waits for the file's upload in progress" key=target`, release,
		func() error { return os.Rename(m.path("source"), m.path("target")) })
	if err != nil {
		t.Fatalf("rename: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("close: %v", err)
	}
	srv.sameObject(t, "target", []byte("renamed over it"))
	if srv.exists("source") {
		t.Fatalf("keys %v", srv.keys(t))
	}
}

// A rename elsewhere does not wait for a close's upload in progress, nor
// do the operations behind it (a rename holds the keys exclusively): the
// upload holds the keys only until it has its key.
func TestRenameElsewhereWhileCloseUploads(t *testing.T) {
	srv, m, started, release := mountHoldingPut(t, "busy")
	if err := os.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, m.path("a"), []byte("moved"))
	closed := renameWhileHeld(t, started, release, m.path("a"), m.path("d/b"),
		func() error { return os.WriteFile(m.path("busy"), []byte("content"), 0o644) })
	writeFile(t, m.path("d/c"), []byte("after the rename"))
	if err := closed(); err != nil {
		t.Fatalf("close: %v", err)
	}
	srv.sameObject(t, "busy", []byte("content"))
	srv.sameObject(t, "d/b", []byte("moved"))
	srv.sameObject(t, "d/c", []byte("after the rename"))
	if srv.exists("a") {
		t.Error("a is still in the bucket")
	}
}

// The same for an open for writing that copies the object into staging.
func TestRenameElsewhereWhileOpenDownloads(t *testing.T) {
	srv, m, started, release := mountHolding(t, http.MethodGet, "big")
	writeFile(t, m.path("big"), []byte("existing content"))
	writeFile(t, m.path("a"), []byte("moved"))
	var f *os.File
	opened := renameWhileHeld(t, started, release, m.path("a"), m.path("b"), func() (err error) {
		f, err = os.OpenFile(m.path("big"), os.O_RDWR, 0)
		return err
	})
	if err := opened(); err != nil {
		t.Fatalf("open: %v", err)
	}
	if _, err := f.WriteAt([]byte("EXISTING"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	srv.sameObject(t, "big", []byte("EXISTING content"))
	srv.sameObject(t, "b", []byte("moved"))
}

// The same for a listing (a large directory's takes a request per thousand
// entries); and what it listed before its directory was renamed away and
// another moved in under the name does not go into the cache for the new
// one (it hid g, which the kernel had not looked up: stat_ttl keeps
// listings an hour here).
func TestRenameWhileDirectoryListed(t *testing.T) {
	// The server answers the first listing of big/ and holds the answer.
	started, hold := make(chan struct{}), make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(hold) }) }
	var answered atomic.Bool
	srv := startServerWith(t, store.NewMemory(), func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			if r.Method != http.MethodGet || q.Get("prefix") != "big/" || q.Get("delimiter") != "/" || !answered.CompareAndSwap(false, true) {
				h.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			close(started)
			<-hold
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
		})
	})
	m := startMount(t, srv, "stat_ttl=1h")
	t.Cleanup(release) // before the mount's cleanup, registered earlier
	for _, d := range []string{"big", "other"} {
		if err := os.Mkdir(m.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, m.path("big/f"), []byte("f"))
	srv.putByOther(t, "other/g", []byte("g"))
	type listing struct {
		entries []os.DirEntry
		err     error
	}
	listed := make(chan listing, 1)
	go func() {
		entries, err := os.ReadDir(m.path("big"))
		listed <- listing{entries, err}
	}()
	<-started
	renamed := inBackground(func() error {
		if err := os.Rename(m.path("big"), m.path("big2")); err != nil {
			return err
		}
		return os.Rename(m.path("other"), m.path("big"))
	})
	waitUntil(t, "the renames, while big's listing is held", func() bool { return len(renamed) > 0 })
	if err := <-renamed; err != nil {
		t.Fatalf("rename: %v", err)
	}
	release()
	if l := <-listed; l.err != nil || len(l.entries) != 1 || l.entries[0].Name() != "f" {
		t.Fatalf("listing: %v %v", l.entries, l.err)
	}
	if data, err := os.ReadFile(m.path("big/g")); err != nil || string(data) != "g" {
		t.Fatalf("big/g: %q %v", data, err)
	}
	srv.sameObject(t, "big2/f", []byte("f"))
}

// A lookup lets the keys go while it asks the bucket: a rename does not
// wait for its HEAD (nor, since a waiting rename holds up the operations
// that come after it, does the rest of the mount).
func TestRenameWhileLookupAsks(t *testing.T) {
	srv, m, started, release := mountHolding(t, http.MethodHead, "d/other")
	// In two directories (the kernel itself makes a rename wait for a
	// lookup in the same one) that the mount has not listed.
	for key, content := range map[string]string{"d/other": "by another client", "e/a": "moved"} {
		srv.putByOther(t, key, []byte(content))
	}
	if _, err := os.Stat(m.path("e/a")); err != nil {
		t.Fatal(err)
	}
	looked := renameWhileHeld(t, started, release, m.path("e/a"), m.path("e/b"), func() error {
		return readsAs(m.path("d/other"), "by another client")
	})
	if err := looked(); err != nil {
		t.Fatalf("read: %v", err)
	}
	srv.sameObject(t, "e/b", []byte("moved"))
}

// A lookup overtaken by a rename of a directory above it asks again, under
// the new name: the answer for the old key (gone by then) would report the
// file missing.
func TestLookupOvertakenByDirectoryRename(t *testing.T) {
	srv, m, started, release := mountHolding(t, http.MethodHead, "a/x/f")
	srv.putByOther(t, "a/x/f", []byte("content"))
	// The kernel knows a and a/x: the read below looks up f alone.
	if _, err := os.Stat(m.path("a/x")); err != nil {
		t.Fatal(err)
	}
	read := renameWhileHeld(t, started, release, m.path("a"), m.path("b"), func() error {
		return readsAs(m.path("a/x/f"), "content")
	})
	if err := read(); err != nil {
		t.Fatalf("read of a/x/f begun before the rename: %v", err)
	}
	srv.sameObject(t, "b/x/f", []byte("content"))
	if srv.exists("a/x/f") {
		t.Error("a/x/f is still in the bucket")
	}
	if !m.logged("a lookup asks again") {
		t.Error("the lookup did not ask again")
	}
}

// The same for a read of a file that is not staged (a ranged GET): a rename
// does not wait for it, and a read that a rename of a directory above
// overtakes reads again under the new name — under the old one another
// client has put a different object meanwhile.
func TestReadOvertakenByDirectoryRename(t *testing.T) {
	srv, m, started, release := mountHolding(t, http.MethodGet, "a/x/f")
	srv.putByOther(t, "a/x/f", []byte("content"))
	f, err := os.Open(m.path("a/x/f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	read := renameWhileHeld(t, started, release, m.path("a"), m.path("b"), func() error {
		data, err := io.ReadAll(f)
		if err == nil && string(data) != "content" {
			err = fmt.Errorf("f holds %q", data)
		}
		return err
	})
	srv.putByOther(t, "a/x/f", []byte("impostor"))
	if err := read(); err != nil {
		t.Fatalf("read begun before the rename: %v", err)
	}
	srv.sameObject(t, "b/x/f", []byte("content"))
}

// The same for a readlink that reads the link's object.
func TestReadlinkOvertakenByDirectoryRename(t *testing.T) {
	srv, m, started, release := mountHolding(t, http.MethodGet, "a/l")
	if err := os.Mkdir(m.path("a"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("target", m.path("a/l")); err != nil {
		t.Fatal(err)
	}
	// A second mount knows nothing of the link: it reads its object.
	other := startMount(t, srv)
	if _, err := os.Lstat(other.path("a/l")); err != nil {
		t.Fatal(err)
	}
	read := renameWhileHeld(t, started, release, other.path("a"), other.path("b"), func() error {
		target, err := os.Readlink(other.path("a/l"))
		if err == nil && target != "target" {
			err = fmt.Errorf("a/l points to %q", target)
		}
		return err
	})
	if err := os.Mkdir(m.path("a2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("impostor", m.path("a2/l")); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.store.Copy(testBucket, "a2/l", testBucket, "a/l", nil, false); err != nil {
		t.Fatal(err)
	}
	if err := read(); err != nil {
		t.Fatalf("readlink begun before the rename: %v", err)
	}
}

// readsAs reads the file at path and fails unless it holds want.
func readsAs(path, want string) error {
	data, err := os.ReadFile(path)
	if err == nil && string(data) != want {
		err = fmt.Errorf("%s holds %q, want %q", path, data, want)
	}
	return err
}

// A rename of the directory of a file whose close is uploading waits for
// that upload, then moves the object with the rest: it is not left under
// the old name.
func TestDirectoryRenameWhileCloseUploads(t *testing.T) {
	srv, m, started, release := mountHoldingPut(t, "d/busy")
	if err := os.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, m.path("d/other"), []byte("other"))
	closed := inBackground(func() error { return os.WriteFile(m.path("d/busy"), []byte("content"), 0o644) })
	<-started
	err := whileUploadHeld(t, m, `msg="an upload waits for the file's upload in progress" key=d/busy`, release,
		func() error { return os.Rename(m.path("d"), m.path("e")) })
	if err != nil {
		t.Fatalf("rename: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("close: %v", err)
	}
	srv.sameObject(t, "e/busy", []byte("content"))
	srv.sameObject(t, "e/other", []byte("other"))
	for _, k := range srv.keys(t) {
		if strings.HasPrefix(k, "d/") {
			t.Errorf("%s left under the old name", k)
		}
	}
}

// A close of a file inside a directory that is being renamed — after the
// rename has uploaded the directory's dirty files, while it copies the
// objects — lands under the new name: uploaded under the old one, it was
// deleted by the rename's last step or left behind, and the new name had
// the older content.
func TestCloseInsideDirectoryBeingRenamed(t *testing.T) {
	for _, mode := range bothModes {
		t.Run(mode.name, func(t *testing.T) {
			srv, m, started, release := mountHoldingPut(t, "moved/a", mode.opts...)
			if err := os.Mkdir(m.path("d"), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, m.path("d/a"), []byte("a"))
			f, err := os.Create(m.path("d/b"))
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString("written before the rename;")
			renamed := inBackground(func() error { return os.Rename(m.path("d"), m.path("moved")) })
			<-started // the rename's copy of d/a is held
			f.WriteString(" written while it copies")
			closed := inBackground(f.Close)
			// Without the fix the close is done before the release.
			waitUntil(t, "the close to end or wait for the rename", func() bool {
				if len(closed) > 0 {
					return true
				}
				return strings.Contains(m.logs.String(), "waits for a rename")
			})
			release()
			if err := <-renamed; err != nil {
				t.Fatalf("rename: %v", err)
			}
			if err := <-closed; err != nil {
				t.Fatalf("close: %v", err)
			}
			m.stop(t)
			srv.sameObject(t, "moved/b", []byte("written before the rename; written while it copies"))
			srv.sameObject(t, "moved/a", []byte("a"))
			for _, k := range srv.keys(t) {
				if strings.HasPrefix(k, "d/") {
					t.Fatalf("%s left under the old name; keys %v", k, srv.keys(t))
				}
			}
		})
	}
}

// An open with O_TRUNC reads nothing of the object it empties: cp, dd and a
// shell redirection over an existing file cost its lookup and the upload.
// The mount asks the kernel for atomic O_TRUNC; without it the kernel sent
// the open without O_TRUNC and a truncate after it, and the open copied the
// object in first — a small one whole, a large one's last part — for the
// truncate to throw away; and in sync mode, since that file was not empty
// by open, a shell redirection's first close (of a duplicate descriptor,
// before anything is written) uploaded an empty object before the real
// one.
func TestOverwriteReadsNothingOfTheOldObject(t *testing.T) {
	for _, mode := range bothModes {
		t.Run(mode.name, func(t *testing.T) {
			srv := startServer(t)
			m := startMount(t, srv, append([]string{"kept_size=0", "part_size=1MiB"}, mode.opts...)...)
			srv.putByOther(t, "small", randomBytes(t, 1000))
			srv.putByOther(t, "large", randomBytes(t, 3<<20))
			srv.putByOther(t, "redirected", randomBytes(t, 3<<20))
			src := filepath.Join(t.TempDir(), "src")
			data := randomBytes(t, 5000)
			writeFile(t, src, data)
			before, puts := srv.Count("GetObject"), srv.Count("PutObject")
			run(t, "cp", src, m.path("small"))
			run(t, "dd", "if="+src, "of="+m.path("large"), "status=none")
			run(t, "sh", "-c", `cat "$1" > "$2"`, "sh", src, m.path("redirected"))
			if got := srv.Count("GetObject") - before; got != 0 {
				t.Errorf("overwriting three objects read %d ranges of them", got)
			}
			m.stop(t)
			if got := srv.Count("PutObject") - puts; got != 3 {
				t.Errorf("three overwrites sent %d PUTs", got)
			}
			for _, key := range []string{"small", "large", "redirected"} {
				srv.sameObject(t, key, data)
			}
		})
	}
}

// A file read whole is read again from the kernel's page cache: an open
// within stat_ttl of the mount's last look at the object keeps the pages
// (FOPEN_KEEP_CACHE) when they are of the version it saw. Each `cat` of an
// object was a GET. Anything this mount writes to the file, through any
// kind of descriptor, is read back; a file read in part is read from the
// bucket, so that a new open reads another client's replacement, as
// before; a listing that shows a new version drops the pages.
func TestRereadsComeFromThePageCache(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "stat_ttl=1h")
	data, old := randomBytes(t, 3<<20), randomBytes(t, 2<<20)
	// (Put before the first lookup: the mount lists the root once an hour.)
	srv.putByOther(t, "big", data)
	srv.putByOther(t, "part", old)
	srv.putByOther(t, "whole", old)
	path := m.path("big")
	readAll := func(want []byte, what string) {
		t.Helper()
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: %d bytes (%v), the right ones: %v", what, len(got), err, bytes.Equal(got, want))
		}
	}
	readAll(data, "first read")
	before := srv.Counts()
	readAll(data, "second read")
	run(t, "cat", path)
	if after := srv.Counts(); after["GetObject"] != before["GetObject"] || after["HeadObject"] != before["HeadObject"] {
		t.Errorf("reads of a file read whole asked the bucket: %d GETs, %d HEADs",
			after["GetObject"]-before["GetObject"], after["HeadObject"]-before["HeadObject"])
	}

	// Written through a write-only descriptor (direct I/O, which leaves
	// the kernel's pages alone), then through a read-write one.
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("written"), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	copy(data[1<<20:], "written")
	readAll(data, "read after a write-only edit")
	editAt(t, path, 5, []byte("edited"))
	copy(data[5:], "edited")
	readAll(data, "read after a read-write edit")
	readAll(data, "read again")
	srv.sameObject(t, "big", data)
	// Replaced by a rename: the name is another file.
	writeFile(t, m.path("other"), []byte("the other file"))
	if err := os.Rename(m.path("other"), path); err != nil {
		t.Fatal(err)
	}
	readAll([]byte("the other file"), "read after a rename over it")

	// Read in part, then replaced by another client: a new open reads the
	// new version (no page of the old one is kept).
	f, err := os.Open(m.path("part"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	replaced := randomBytes(t, 2<<20)
	srv.putByOther(t, "part", replaced)
	if got, err := os.ReadFile(m.path("part")); err != nil || !bytes.Equal(got, replaced) {
		t.Fatalf("read of a file read in part, replaced since: %d bytes (%v), the new version: %v", len(got), err, bytes.Equal(got, replaced))
	}

	// Read whole, then replaced: within stat_ttl the mount shows the
	// version it saw, as it shows its size — or, for a page the kernel
	// let go, fails the read (ESTALE): never a splice of the two — until a
	// listing shows the new one.
	path = m.path("whole")
	readAll(old, "read of another object")
	srv.putByOther(t, "whole", replaced)
	if got, err := os.ReadFile(path); err != nil && errnoOf(err) != syscall.ESTALE || err == nil && !bytes.Equal(got, old) {
		t.Fatalf("read within stat_ttl of a replaced object: %d bytes (%v), the old version: %v", len(got), err, bytes.Equal(got, old))
	}
	if _, err := os.ReadDir(m.path("")); err != nil {
		t.Fatal(err)
	}
	readAll(replaced, "read after a listing showed the replacement")

	// Streamed through a cache smaller than itself, its start gone from
	// the disk, the file's version is not known from its upload: the
	// first listing that shows it tells it.
	m = startMount(t, srv, "stat_ttl=1h", "cache_size=4MiB", "part_size=1MiB")
	streamed := randomBytes(t, 12<<20)
	path = m.path("streamed")
	writeFile(t, path, streamed)
	readAll(streamed, "read of a streamed file")
	if _, err := os.ReadDir(m.path("")); err != nil {
		t.Fatal(err)
	}
	before = srv.Counts()
	readAll(streamed, "read of a streamed file again")
	if n := srv.Counts()["GetObject"] - before["GetObject"]; n != 0 {
		t.Errorf("a streamed file read whole, listed since, read again with %d GETs", n)
	}
}

// A file staged from its end (absent.go) that is unlinked, or replaced by a
// rename, while a descriptor holds it open still reads and writes through
// it: its start is fetched before its object goes. (Writes there failed
// ESTALE: the start was to come from the deleted object.)
func TestOpenFileStagedFromItsEndOutlivesItsName(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "part_size=16KiB", "kept_size=0")
	data := randomBytes(t, 70000)
	for _, how := range []string{"unlink", "rename over"} {
		srv.putByOther(t, "f", data)
		f, err := os.OpenFile(m.path("f"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if how == "unlink" {
			err = os.Remove(m.path("f"))
		} else {
			writeFile(t, m.path("other"), []byte("other"))
			err = os.Rename(m.path("other"), m.path("f"))
		}
		if err != nil {
			t.Fatalf("%s: %v", how, err)
		}
		if _, err := f.WriteAt([]byte("new start"), 0); err != nil {
			t.Fatalf("write after %s: %v", how, err)
		}
		want := append([]byte("new start"), data[9:]...)
		got := make([]byte, len(data))
		if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read after %s: %v, same bytes %v", how, err, bytes.Equal(got, want))
		}
		if err := f.Close(); err != nil {
			t.Fatalf("close after %s: %v", how, err)
		}
	}
	m.stop(t)
	srv.sameObject(t, "f", []byte("other"))
}
