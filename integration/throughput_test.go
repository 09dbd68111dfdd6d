package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/ossmount/ossmount/bucket/store"
	"github.com/ossmount/ossmount/integration/osslocal"
)

// DESIGN §2: a file written in order is uploaded in parts while it is
// written; sizes around part boundaries land byte for byte.
func TestStreamedMultipart(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "part_size=1MiB", "parallel=2")
	src := t.TempDir()
	const mib = 1 << 20
	for _, size := range []int{0, 1, mib - 1, mib, mib + 1, 2 * mib, 3*mib + 5, 7*mib + 12345} {
		name := filepath.Join(src, "f")
		data := randomBytes(t, size)
		writeFile(t, name, data)
		before := srv.Count("CompleteMultipartUpload")
		run(t, "dd", "if="+name, "of="+m.path("f"), "bs=128k", "status=none")
		if size == 0 {
			run(t, "sync", m.path("f")) // an empty new file is uploaded at release
		}
		srv.sameObject(t, "f", data)
		streamed := srv.Count("CompleteMultipartUpload") - before
		if want := size >= mib; (streamed == 1) != want { // from 1 MiB on: multipart (streamed, or the SDK Uploader at exactly one part)
			t.Errorf("size %d: %d multipart completions, want streamed=%v", size, streamed, want)
		}
	}
	if n := srv.Count("AbortMultipartUpload"); n != 0 {
		t.Errorf("%d aborts for sequential writes", n)
	}
}

// A write behind the parts already sent falls back to a whole upload.
func TestStreamedMultipartRandomWriteFallsBack(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "part_size=1MiB")
	data := randomBytes(t, 5<<20)
	f, err := os.Create(m.path("rewritten"))
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += 256 << 10 {
		if _, err := f.Write(data[off : off+256<<10]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.WriteAt([]byte("BEHIND"), 100); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	want := bytes.Clone(data)
	copy(want[100:], "BEHIND")
	srv.sameObject(t, "rewritten", want)
	if srv.Count("InitiateMultipartUpload") == 0 || srv.Count("AbortMultipartUpload") == 0 {
		t.Fatalf("expected a started and aborted stream: %v", srv.Counts())
	}
	// The whole upload is a multipart upload of its own (the SDK's
	// Uploader); the torn stream is never completed.
	c := srv.Counts()
	if c["CompleteMultipartUpload"] != c["InitiateMultipartUpload"]-c["AbortMultipartUpload"] {
		t.Fatalf("the torn stream was completed: %v", c)
	}
}

// A multipart upload whose completion reports a wrong CRC64 fails (the
// streamed one, then the whole-file retry): close is EIO, and an unlink
// deletes the object the server stored.
func TestStreamedMultipartCRCMismatch(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "part_size=1MiB")
	srv.AddFault(osslocal.Fault{Op: "CompleteMultipartUpload", BadCRC: true})
	f, err := os.Create(m.path("big"))
	if err != nil {
		t.Fatal(err)
	}
	f.Write(randomBytes(t, 3<<20))
	if err := f.Close(); errnoOf(err) != syscall.EIO {
		t.Fatalf("close: %v, want EIO", err)
	}
	// The server stored what it answered with the wrong CRC: an unlink
	// deletes it (it was left behind).
	if err := os.Remove(m.path("big")); err != nil {
		t.Fatal(err)
	}
	if srv.exists("big") {
		t.Errorf("the object of the failed upload outlived the unlink")
	}
	srv.ClearFaults()
}

// A file whose directory is renamed while the file is written in parts
// ends under the directory's new name, whole: the rename first completes
// what was streamed under the old one, then moves it.
func TestStreamedFileMovedWithItsDirectory(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "part_size=1MiB")
	if err := os.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	data := randomBytes(t, 5<<20)
	f, err := os.Create(m.path("d/f"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data[:3<<20]); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.path("d"), m.path("e")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data[3<<20:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	srv.sameObject(t, "e/f", data)
	if srv.exists("d/f") {
		t.Fatalf("keys %v", srv.keys(t))
	}
}

// A big file whose parts the server refuses: close fails, and every
// multipart upload begun — the streamed one, the whole-file retry's — is
// aborted, not left holding parts (storage billed and invisible).
func TestRefusedPartsLeaveNoUpload(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "part_size=1MiB")
	// 403, which the SDK does not retry: its Uploader's retry of a part
	// seeks the part's reader while net/http may still be reading it for
	// the failed attempt, which the race detector reports inside the SDK.
	srv.AddFault(osslocal.Fault{Op: "UploadPart", Status: 403})
	f, err := os.Create(m.path("big"))
	if err != nil {
		t.Fatal(err)
	}
	f.Write(randomBytes(t, 5<<20))
	if err := f.Close(); errnoOf(err) != syscall.EACCES {
		t.Fatalf("close: %v, want EACCES", err)
	}
	// The release after the close tries once more.
	waitUntil(t, "the release's upload", func() bool { return strings.Contains(m.logs.String(), "upload at release failed") })
	srv.ClearFaults()
	c := srv.Counts()
	if c["InitiateMultipartUpload"] == 0 || c["AbortMultipartUpload"] != c["InitiateMultipartUpload"] || c["CompleteMultipartUpload"] != 0 {
		t.Fatalf("multipart uploads begun and not aborted: %v", c)
	}
	if srv.exists("big") {
		t.Fatal("an object landed")
	}
}

// A part the server refuses twice is sent again by the SDK, and the
// streamed upload completes: no fallback to a whole upload. (Under the race
// detector this also holds that the retry's seek of the part's body does
// not race with net/http still reading it for the failed attempt.)
func TestStreamedPartRetried(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "part_size=1MiB")
	srv.AddFault(osslocal.Fault{Op: "UploadPart", Status: 500, After: 1, Count: 2})
	data := randomBytes(t, 5<<20)
	writeFile(t, m.path("big"), data)
	srv.sameObject(t, "big", data)
	if c := srv.Counts(); c["InitiateMultipartUpload"] != 1 || c["CompleteMultipartUpload"] != 1 || c["AbortMultipartUpload"] != 0 {
		t.Fatalf("want one streamed upload, completed: %v", c)
	}
}

// A file larger than the cache (cache_size here; the free disk alike) is
// written in order through it: the parts the bucket holds leave the cache
// disk, and the writer waits for parts in flight. It used to fail with
// ENOSPC at the cache's size. What left the cache cannot be changed: a
// write behind the end, a truncate and a rename of the open file fail
// (EIO, EIO, EBUSY), the writing goes on, and the object is what was
// written in order.
func TestFileLargerThanTheCache(t *testing.T) {
	srv := startServer(t)
	// A cache under two parts cannot let a file stream through: the
	// mount says so when it starts.
	m := startMount(t, srv, "cache_size=6MiB")
	m.stop(t)
	if !strings.Contains(m.logs.String(), "cache_size is under two parts") {
		t.Errorf("no warning that the cache is too small for the parts")
	}
	m = startMount(t, srv, "cache_size=6MiB", "part_size=1MiB", "parallel=2")
	src := t.TempDir()
	data := randomBytes(t, 40<<20)
	writeFile(t, filepath.Join(src, "big"), data)
	run(t, "dd", "if="+filepath.Join(src, "big"), "of="+m.path("big"), "bs=1M", "status=none")
	srv.sameObject(t, "big", data)
	if !m.logged("the cache is full: uploaded parts of a file being written leave it") {
		t.Errorf("no log line says why the start of the file left the cache")
	}
	if strings.Contains(m.logs.String(), "cache_size is under two parts") {
		t.Errorf("a warning that the cache is too small for parts that fit")
	}

	script := `
import errno, os, sys
path, data = sys.argv[1], open(sys.argv[2], "rb").read()
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, data[:20 << 20])
for what, op in (("pwrite", lambda: os.pwrite(fd, b"x", 0)), ("ftruncate", lambda: os.ftruncate(fd, 10)),
                 ("rename", lambda: os.rename(path, path + ".moved"))):
    try:
        op()
        print(what, "ok")
    except OSError as e:
        print(what, errno.errorcode[e.errno])
rfd = os.open(path, os.O_RDONLY)
for when in ("", " after close"):
    try:
        print("pread" + when, "ok" if os.pread(rfd, 100, 0) == data[:100] else "wrong")
    except OSError as e:
        print("pread" + when, errno.errorcode[e.errno])
    if not when:
        os.write(fd, data[20 << 20:])
        os.close(fd)
os.close(rfd)
`
	// Read back while it is written, the start is gone; once the close
	// has uploaded it, the start is read from the object, though rfd
	// still holds the staging file (it failed EIO until the release).
	out := run(t, "python3", "-c", script, m.path("edited"), filepath.Join(src, "big"))
	if want := "pwrite EIO\nftruncate EIO\nrename EBUSY\npread EIO\npread after close ok\n"; out != want {
		t.Errorf("changes of what left the cache:\n%swant\n%s", out, want)
	}
	srv.sameObject(t, "edited", data)
	if srv.exists("edited.moved") {
		t.Errorf("the refused rename left an object")
	}
}

// A sparse copy (cp over holes: writes past the end, then an ftruncate
// over a trailing hole) is still a file written in order: it streams, and
// close waits for its last part only. Its holes used to abort the stream,
// and close uploaded the whole file again. Holes take no room in the
// cache, and a write past the end that fails does not grow the file: it
// grew to the write's offset, and the upload of that size failed with EIO
// at close.
func TestSparseCopyStreams(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "part_size=1MiB", "parallel=2")
	const mib = 1 << 20
	data := randomBytes(t, 8*mib)
	want := make([]byte, 24*mib)
	copy(want[2*mib:], data[:4*mib]) // hole, data, hole, data, trailing hole
	copy(want[14*mib:], data[4*mib:])
	src := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{2 * mib, 14 * mib} {
		if _, err := f.WriteAt(want[off:off+4*mib], off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(int64(len(want))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	before := srv.Counts()
	run(t, "cp", "--sparse=always", src, m.path("sparse"))
	srv.sameObject(t, "sparse", want)
	after := srv.Counts()
	for op, n := range map[string]int{"CompleteMultipartUpload": 1, "UploadPart": 24, "PutObject": 0} {
		if got := after[op] - before[op]; got != n {
			t.Errorf("%d %s for a sparse copy, want %d", got, op, n)
		}
	}
	// A streamed object leaves its mtime to Last-Modified (its metadata
	// is sent with the first part); a whole upload at close carries it.
	if obj, err := srv.store.Head(testBucket, "sparse"); err != nil || obj.Attrs.Meta["mtime"] != "" {
		t.Errorf("the sparse copy was not streamed: %v, mtime %q", err, obj.Attrs.Meta["mtime"])
	}

	m.stop(t)

	// Holes take no room in the cache: the 24 MiB file holds 8 MiB, and a
	// write-back mount (which keeps files whole) with a 12 MiB cache takes
	// it without streaming it through. The write at 14 MiB failed with
	// ENOSPC when holes counted.
	m = startMount(t, srv, "writeback", "cache_size=12MiB", "part_size=1MiB", "parallel=2")
	run(t, "cp", "--sparse=always", src, m.path("small-cache"))
	if strings.Contains(m.logs.String(), "the cache cannot hold a file being written") {
		t.Errorf("a sparse file whose data fits the cache was streamed through it")
	}
	m.stop(t)
	srv.sameObject(t, "small-cache", want)

	// A write past the end that fails (ENOSPC: over 6 MiB of data through
	// a 6 MiB cache, by a file not written in order, which cannot stream)
	// does not grow the file.
	m = startMount(t, srv, "cache_size=6MiB", "part_size=1MiB", "parallel=2")
	script := `
import errno, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"a" * ((6 << 20) - (100 << 10)))
os.pwrite(fd, b"b", 0)
try:
    os.pwrite(fd, b"c" * (2 << 20), 10 << 20)
    print("ok")
except OSError as e:
    print(errno.errorcode[e.errno])
print(os.fstat(fd).st_size)
os.close(fd)
`
	if out := run(t, "python3", "-c", script, m.path("failed")); out != fmt.Sprintf("ENOSPC\n%d\n", 6*mib-100<<10) {
		t.Errorf("a failed write past the end:\n%s", out)
	}
	srv.sameObject(t, "failed", append([]byte("b"), bytes.Repeat([]byte("a"), 6*mib-100<<10-1)...))
}

// An append to, or an edit of, a big object sends the parts it changed
// and has the server copy the others from the version the file was read
// from — in both modes. If another client replaced the object meanwhile,
// the whole file is sent: the program's bytes, not a splice.
func TestEditOfABigObjectCopiesWhatItLeftAlone(t *testing.T) {
	for _, mode := range bothModes {
		t.Run(mode.name, func(t *testing.T) {
			srv, m, settled := logMount(t, mode)
			data := randomBytes(t, 8<<20+123)
			writeFile(t, m.path("log"), data)
			settled()
			srv.sameObject(t, "log", data)

			before := srv.Counts()
			run(t, "sh", "-c", "echo one more line >> "+m.path("log"))
			settled()
			data = append(data, "one more line\n"...)
			srv.sameObject(t, "log", data)
			after := srv.Counts()
			// Nine parts: the eight first copied (in one copy request,
			// upload.copyPartSize), the last sent.
			checkParts(t, "an append", before, after, 1, 1)

			before = after
			editAt(t, m.path("log"), 3<<20+5, []byte("an edit"))
			settled()
			copy(data[3<<20+5:], "an edit")
			srv.sameObject(t, "log", data)
			after = srv.Counts()
			checkParts(t, "an edit of one part", before, after, 2, 1)

			if mode.name == "sync" {
				// Each fsync of a file kept open uploads it: the second
				// copies from what the first uploaded.
				f, err := os.OpenFile(m.path("log"), os.O_RDWR|os.O_APPEND, 0)
				if err != nil {
					t.Fatal(err)
				}
				for _, line := range []string{"fsync'd\n", "and again\n"} {
					before = srv.Counts()
					if _, err := f.WriteString(line); err != nil {
						t.Fatal(err)
					}
					if err := f.Sync(); err != nil {
						t.Fatal(err)
					}
					data = append(data, line...)
					srv.sameObject(t, "log", data)
				}
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
				after = srv.Counts()
				checkParts(t, "the second fsync", before, after, 1, 1)
			}

			// Another client replaces the object between this file's
			// first write (which read the object in) and its close.
			f, err := os.OpenFile(m.path("log"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte("MINE"), 0); err != nil {
				t.Fatal(err)
			}
			srv.putByOther(t, "log", randomBytes(t, len(data)))
			if err := f.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			settled()
			copy(data, "MINE")
			srv.sameObject(t, "log", data)
			if !m.logged("uploading the whole file") {
				t.Error("no line says the copy was given up")
			}
		})
	}
}

// An edit of a file this mount uploaded starts from the copy the cache
// kept at its release, not a download of the whole object, and reads of it
// are served from that copy, as long as the object is still that version;
// another client's replacement is read in once stat_ttl has run out.
func TestKeptCopyServesEditsAndReads(t *testing.T) {
	for _, mode := range bothModes {
		t.Run(mode.name, func(t *testing.T) {
			srv, m, settled := logMount(t, mode, "stat_ttl=300ms")
			data := randomBytes(t, 4<<20+7)
			writeFile(t, m.path("log"), data)
			settled()
			for i := range 3 {
				before := srv.Counts()
				line := fmt.Sprintf("line %d\n", i)
				run(t, "sh", "-c", "printf '"+line[:len(line)-1]+"\\n' >> "+m.path("log"))
				settled()
				data = append(data, line...)
				srv.sameObject(t, "log", data)
				after := srv.Counts()
				if n := after["GetObject"] - before["GetObject"]; n != 0 {
					t.Errorf("append %d read the object in again (%d GETs)", i, n)
				}
				checkParts(t, fmt.Sprintf("append %d", i), before, after, 1, 1)
			}
			// Once every handle is released (the kernel sends releases
			// after close returns), the file's staging file is the kept
			// copy; until then reads are served from the staging file,
			// whatever another client does to the object.
			waitForStatus(t, m, "kept_files=1")

			local := filepath.Join(t.TempDir(), "log")
			writeFile(t, local, data)
			before := srv.Counts()
			run(t, "cmp", local, m.path("log"))
			if n := srv.Counts()["GetObject"] - before["GetObject"]; n != 0 {
				t.Errorf("a read of the kept copy sent %d GETs", n)
			}

			other := randomBytes(t, 3<<20)
			srv.putByOther(t, "log", other)
			writeFile(t, local, other)
			before = srv.Counts()
			waitUntil(t, "another client's replacement to show", func() bool {
				return exec.Command("cmp", "-s", local, m.path("log")).Run() == nil
			})
			if n := srv.Counts()["GetObject"] - before["GetObject"]; n == 0 {
				t.Error("a read of an object another client replaced read the kept copy")
			}
			before = srv.Counts()
			run(t, "sh", "-c", "echo last >> "+m.path("log"))
			settled()
			srv.sameObject(t, "log", append(other, "last\n"...))
			// (In sync mode it is staged from its end: no GET, see
			// TestAppendToALargeObjectReadsOnlyItsEnd. The content shows
			// the kept copy was not used.)
			if n := srv.Counts()["GetObject"] - before["GetObject"]; n == 0 && mode.name == "writeback" {
				t.Error("an object another client replaced was not read in")
			}
		})
	}
}

// In write-back mode, a file appended to again while its previous version
// is being uploaded works on a copy; once that upload completes, the
// copy's upload copies on the server what it left unchanged from the new
// object, instead of sending the whole file.
func TestWritebackAppendDuringUploadCopiesFromIt(t *testing.T) {
	var armed atomic.Bool
	srv, m, started, release := mountHoldingFirst(t, func(r *http.Request) bool {
		return armed.Load() && r.Method == http.MethodPost && r.URL.Query().Has("uploadId") && strings.HasSuffix(r.URL.Path, "/log")
	}, "writeback", "writeback_delay=0s", "part_size=1MiB")
	data := randomBytes(t, 8<<20)
	writeFile(t, m.path("log"), data)
	run(t, "sync", m.path("log"))

	armed.Store(true)
	run(t, "sh", "-c", "echo first >> "+m.path("log"))
	<-started // its upload's completion, held
	before := srv.Counts()
	run(t, "sh", "-c", "echo second >> "+m.path("log"))
	release()
	run(t, "sync", m.path("log"))
	data = append(data, "first\nsecond\n"...)
	srv.sameObject(t, "log", data)
	after := srv.Counts()
	// The held completion, then the second version: 8 parts copied from
	// the first's object (in one request), the last sent.
	checkParts(t, "the append during an upload", before, after, 1, 1)
}

// logMount mounts a new server with 1 MiB parts in mode; settled waits
// until the file "log" is in the bucket (its upload, in write-back mode).
func logMount(t *testing.T, mode mountMode, opts ...string) (srv *server, m *mount, settled func()) {
	t.Helper()
	srv = startServer(t)
	m = startMount(t, srv, slices.Concat([]string{"part_size=1MiB"}, mode.opts, opts)...)
	settled = func() {
		if mode.name == "writeback" {
			run(t, "sync", m.path("log")) // waits for its upload
		}
	}
	return srv, m, settled
}

// checkParts checks that between two of the server's counts what (an
// upload) made copied copy requests (a run of unchanged parts is copied
// in one, up to 64 MiB) and sent sent parts, and no whole upload.
func checkParts(t *testing.T, what string, before, after map[string]int, copied, sent int) {
	t.Helper()
	c, p := after["UploadPartCopy"]-before["UploadPartCopy"], after["UploadPart"]-before["UploadPart"]
	if c != copied || p != sent {
		t.Errorf("%s made %d copied and %d sent parts, want %d and %d", what, c, p, copied, sent)
	}
	if n := after["PutObject"] - before["PutObject"]; n != 0 {
		t.Errorf("%s sent the whole file (%d PUTs)", what, n)
	}
}

// Copies kept at the unmount are taken by the next mount with the same
// cache directory: an append after a remount reads nothing. A copy changed
// on the disk meanwhile does not match its object's CRC-64, and the object
// is read instead. In write-back mode a copy taken so is journaled like
// any staging file: a mount killed before its upload loses nothing.
func TestKeptCopiesOutliveTheMount(t *testing.T) {
	for _, mode := range bothModes {
		t.Run(mode.name, func(t *testing.T) {
			srv := startServer(t)
			dir, cacheDir := t.TempDir(), filepath.Join(t.TempDir(), "cache")
			opts := append([]string{"part_size=1MiB"}, mode.opts...)
			m := startMountAt(t, srv, dir, cacheDir, opts...)
			data := randomBytes(t, 4<<20+7)
			writeFile(t, m.path("log"), data)
			m.stop(t)

			m = startMountAt(t, srv, dir, cacheDir, opts...)
			before := srv.Counts()
			run(t, "sh", "-c", "echo after a remount >> "+m.path("log"))
			run(t, "sync", m.path("log"))
			data = append(data, "after a remount\n"...)
			srv.sameObject(t, "log", data)
			after := srv.Counts()
			if n := after["GetObject"] - before["GetObject"]; n != 0 {
				t.Errorf("an append after a remount read the object in (%d GETs)", n)
			}
			checkParts(t, "an append after a remount", before, after, 1, 1)
			m.stop(t)

			filed, _ := filepath.Glob(filepath.Join(cacheDir, "kept", "*", "[^.]*"))
			if len(filed) != 1 {
				t.Fatalf("filed copies %v, want one", filed)
			}
			f, err := os.OpenFile(filed[0], os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt([]byte("CHANGED ON DISK"), 1<<20)
			f.Close()
			if mode.name == "writeback" {
				// Nothing uploaded before the kill below.
				m = startMountAt(t, srv, dir, cacheDir, append(opts, "writeback_delay=1h")...)
			} else {
				m = startMountAt(t, srv, dir, cacheDir, opts...)
			}
			before = srv.Counts()
			run(t, "sh", "-c", "echo once more >> "+m.path("log"))
			if mode.name == "writeback" {
				m.kill(t) // acknowledged, not uploaded: the journal has it
				m = startMountAt(t, srv, dir, cacheDir, opts...)
			}
			run(t, "sync", m.path("log"))
			data = append(data, "once more\n"...)
			srv.sameObject(t, "log", data)
			if n := srv.Counts()["GetObject"] - before["GetObject"]; n == 0 {
				t.Error("a copy changed on the disk was used")
			}
		})
	}
}

// In sync mode, a large object another client wrote is staged from its
// last part when opened for writing: an append reads that part alone, and
// its close copies the rest on the server. What needs the start reads it
// in first — a read there, a truncate into it, a rename of the file while
// clean — and an object replaced before then fails the close rather than
// make a splice of two versions. Write-back mode reads the object in whole.
func TestAppendToALargeObjectReadsOnlyItsEnd(t *testing.T) {
	var mu sync.Mutex
	var gets []string // "key from"
	srv := startServerWith(t, store.NewMemory(), func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && !r.URL.Query().Has("list-type") && !strings.HasSuffix(r.URL.Path, "/") {
				from, _, _ := strings.Cut(strings.TrimPrefix(r.Header.Get("Range"), "bytes="), "-")
				mu.Lock()
				gets = append(gets, path.Base(r.URL.Path)+" "+from)
				mu.Unlock()
			}
			h.ServeHTTP(w, r)
		})
	})
	readSince := func() []string {
		mu.Lock()
		defer mu.Unlock()
		got := gets
		gets = nil
		return got
	}
	m := startMount(t, srv, "part_size=1MiB")
	const size = 17<<20 + 1234
	data := randomBytes(t, size)
	for _, key := range []string{"log", "read", "truncated", "moved", "chmodded", "dir/inner", "replaced", "wbreplaced"} {
		srv.putByOther(t, key, data)
	}
	even := randomBytes(t, 16<<20)
	srv.putByOther(t, "even", even)
	readSince()

	before := srv.Counts()
	run(t, "sh", "-c", "echo one more line >> "+m.path("log"))
	srv.sameObject(t, "log", append(append([]byte(nil), data...), "one more line\n"...))
	if got := readSince(); !slices.Equal(got, []string{"log 17825792"}) {
		t.Errorf("an append read %q, want the last part alone", got)
	}
	checkParts(t, "an append", before, srv.Counts(), 1, 1)

	before = srv.Counts()
	run(t, "sh", "-c", "echo x >> "+m.path("even"))
	srv.sameObject(t, "even", append(even, "x\n"...))
	if got := readSince(); len(got) != 0 {
		t.Errorf("an append to an object of whole parts read %q", got)
	}
	checkParts(t, "an append to whole parts", before, srv.Counts(), 1, 1)

	// A read of a little of the start through the appending handle is
	// served from the object; reading on (cmp) reads the start in.
	f, err := os.OpenFile(m.path("read"), os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("x"); err != nil {
		t.Fatal(err)
	}
	readSince()
	buf := make([]byte, 64<<10)
	if _, err := f.ReadAt(buf, 5); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, data[5:5+len(buf)]) {
		t.Error("a read of the start is not the object's")
	}
	// One across the staged end: its start from the object, the rest staged.
	across := make([]byte, 8<<10)
	got, err := f.ReadAt(across, 17<<20-4096)
	if wantAcross := append(append([]byte(nil), data[17<<20-4096:]...), 'x'); err != io.EOF || !bytes.Equal(across[:got], wantAcross) {
		t.Errorf("a read across the staged end: %d bytes, %v; want the object's %d and the appended byte", got, err, len(wantAcross)-1)
	}
	for _, get := range readSince() {
		if from, _ := strconv.Atoi(strings.TrimPrefix(get, "read ")); from >= 1<<20 && from != 17<<20-4096 {
			t.Errorf("reads of 64 KiB at 5 and 8 KiB at 17 MiB - 4 KiB asked for %q: the start was read in", get)
		}
	}
	want := filepath.Join(t.TempDir(), "read")
	if err := os.WriteFile(want, append(append([]byte(nil), data...), 'x'), 0o644); err != nil {
		t.Fatal(err)
	}
	// (cmp's close uploads the file, as any close does.)
	before = srv.Counts()
	run(t, "cmp", want, m.path("read"))
	if !m.logged(`"fetching the start of a file staged from its end" key=read`) {
		t.Error("reading the whole file did not read its start in")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	srv.sameObject(t, "read", append(append([]byte(nil), data...), 'x'))
	checkParts(t, "the uploads after a read", before, srv.Counts(), 1, 1)

	run(t, "truncate", "-s", "1048577", m.path("truncated"))
	srv.sameObject(t, "truncated", data[:1048577])

	// Clean (fsync'd) and renamed: its object moves, and the rest of the
	// file with it — uploaded under the new name, its start copied on the
	// server, not read in. appendAcrossRename appends "a" to file, fsyncs,
	// renames from to to, and appends "b".
	appendAcrossRename := func(file, from, to string) {
		t.Helper()
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		readSince()
		for i, s := range []string{"a", "b"} {
			if _, err := f.WriteString(s); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				if err := f.Sync(); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(from, to); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if got := readSince(); len(got) != 0 {
			t.Errorf("an append, an fsync, a rename of %s and an append read %q", from, got)
		}
	}
	appendAcrossRename(m.path("moved"), m.path("moved"), m.path("moved2"))
	srv.sameObject(t, "moved2", append(append([]byte(nil), data...), "ab"...))
	if srv.exists("moved") {
		t.Error("the renamed file's old object is still there")
	}
	// The same under a directory renamed.
	appendAcrossRename(m.path("dir/inner"), m.path("dir"), m.path("dir2"))
	srv.sameObject(t, "dir2/inner", append(append([]byte(nil), data...), "ab"...))
	if srv.exists("dir/inner") {
		t.Error("the renamed directory's file's old object is still there")
	}

	// Clean and chmodded: the held mode goes up with the file onto its own
	// object, the start copied from the version it was staged from.
	f, err = os.OpenFile(m.path("chmodded"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	readSince()
	if _, err := f.WriteString("c"); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(m.path("chmodded"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the held chmod in the bucket", func() bool {
		o, err := srv.store.Head(testBucket, "chmodded")
		return err == nil && o.Meta["mode"] == "33152"
	})
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	srv.sameObject(t, "chmodded", append(append([]byte(nil), data...), 'c'))
	if got := readSince(); len(got) != 0 {
		t.Errorf("an append, an fsync and a chmod read %q", got)
	}

	// An object another client replaces between the open and the close:
	// the close fails, and their object stays.
	other := randomBytes(t, 3<<20)
	appendAfterReplace := func(mode, file, key string) {
		t.Helper()
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		srv.putByOther(t, key, other)
		if _, err := f.WriteString("mine"); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); !errors.Is(err, syscall.ESTALE) {
			t.Errorf("%s close of a file whose object was replaced after its open: %v, want ESTALE", mode, err)
		}
		srv.sameObject(t, key, other)
	}
	appendAfterReplace("sync", m.path("replaced"), "replaced")
	if !m.logged("was replaced or removed before its start was read in") {
		t.Error("no line says why the close failed")
	}
	// The file is not stuck: once its last handle is released, the next
	// open stages the new object. (Until then an append fails the same
	// way and changes nothing in the bucket.)
	waitUntil(t, "an append to the replaced object", func() bool {
		// Not sh: it does not report a failed close.
		f, err := os.OpenFile(m.path("replaced"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString("again\n"); err != nil {
			t.Fatal(err)
		}
		return f.Close() == nil
	})
	srv.sameObject(t, "replaced", append(other, "again\n"...))

	// Write-back mode reads in whole an object it can keep, so that later
	// appends close at local speed.
	wb := startMount(t, srv, "part_size=1MiB", "writeback", "writeback_delay=0s")
	readSince()
	run(t, "sh", "-c", "echo more >> "+wb.path("even"))
	run(t, "sync", wb.path("even"))
	srv.sameObject(t, "even", append(even, "x\nmore\n"...))
	if got := readSince(); len(got) < 2 {
		t.Errorf("a write-back append read %q, want the whole object", got)
	}

	// One too large to keep it stages from its end, as sync mode does, and
	// its close uploads it: the queue would copy the start from an object
	// that may be replaced after the close was acknowledged. (With an hour's
	// delay, a queued upload would not be in the bucket yet.)
	big := startMount(t, srv, "part_size=1MiB", "writeback", "writeback_delay=1h", "kept_size=16MiB")
	readSince()
	appendTo := func(name, s string) error {
		f, err := os.OpenFile(big.path(name), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
		return f.Close()
	}
	before = srv.Counts()
	if err := appendTo("log", "written back\n"); err != nil {
		t.Fatalf("close of a write-back append: %v", err)
	}
	srv.sameObject(t, "log", append(append([]byte(nil), data...), "one more line\nwritten back\n"...))
	if got := readSince(); !slices.Equal(got, []string{"log 17825792"}) {
		t.Errorf("a write-back append to an object too large to keep read %q, want the last part alone", got)
	}
	checkParts(t, "a write-back append", before, srv.Counts(), 1, 1)

	appendAfterReplace("write-back", big.path("wbreplaced"), "wbreplaced")
}

// A file staged from its end and written while a rename of its directory
// lists what to move (after the rename uploaded the dirty files) goes up
// under its new key with the write: copied and deleted with the rest, it
// kept its start in the deleted object, and its close failed with ESTALE.
func TestDirectoryRenameSendsAFileWrittenDuringIt(t *testing.T) {
	srv, m, listing, release := mountHoldingFirst(t, func(r *http.Request) bool {
		q := r.URL.Query()
		return q.Get("list-type") == "2" && q.Get("prefix") == "dir/" && q.Get("delimiter") == "" && q.Get("max-keys") == "1000"
	}, "part_size=1MiB")
	data := randomBytes(t, 5<<20+1234)
	srv.putByOther(t, "dir/inner", data)
	f, err := os.OpenFile(m.path("dir/inner"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	renamed := inBackground(func() error { return os.Rename(m.path("dir"), m.path("dir2")) })
	<-listing
	if _, err := f.WriteString("during"); err != nil {
		t.Fatal(err)
	}
	release()
	if err := <-renamed; err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close after the directory rename: %v", err)
	}
	srv.sameObject(t, "dir2/inner", append(data, "during"...))
	if srv.exists("dir/inner") {
		t.Error("the old object is still there")
	}
}

// A streamed upload given up (a write behind its parts while one is in
// flight) cancels its parts in flight: its upload is aborted at once, not
// after a part the server holds — an unmount waiting for that abort hung
// for a minute behind a part the server did not answer, through the SDK's
// retries.
func TestGivenUpStreamCancelsItsParts(t *testing.T) {
	srv, m, started, _ := mountHoldingFirst(t, func(r *http.Request) bool {
		return r.Method == http.MethodPut && r.URL.Query().Get("partNumber") == "2" && strings.HasSuffix(r.URL.Path, "/big")
	}, "part_size=1MiB")
	f, err := os.Create(m.path("big"))
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(t, 5<<19)
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	<-started
	if _, err := f.WriteAt([]byte("x"), 5); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	data[5] = 'x'
	srv.sameObject(t, "big", data)
	waitUntil(t, "the given-up upload aborted while its part is held", func() bool {
		keys, err := srv.store.Uploads(testBucket)
		return err == nil && len(keys) == 0
	})
}
