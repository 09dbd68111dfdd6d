package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ossmount/ossmount/integration/osslocal"
)

// A server that fails a share of the requests at random — 503s, 500s,
// connections cut mid-body — while cp -r copies a tree of small files and
// multipart ones: every file cp did not report (nor a directory above
// it) is in the bucket byte for byte, every one it did report is either
// absent or whole, and each reported failure is logged with its object
// name. In write-back mode the queue's retries deliver every file cp was
// told was written by the time the mount is stopped.
func TestServerErrorsAtRandom(t *testing.T) {
	src := t.TempDir()
	want := map[string][]byte{}
	for i := range 24 {
		want[fmt.Sprintf("d%d/f%02d", i%4, i)] = randomBytes(t, 1000+i*800)
	}
	for i := range 2 {
		want[fmt.Sprintf("big/b%d", i)] = randomBytes(t, 5<<19+i*1000) // 2.5 MiB: three parts of 1 MiB
	}
	for name, data := range want {
		os.MkdirAll(filepath.Join(src, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	faults := func(srv *server) {
		// Three PutObjects in a row fail — all the SDK's attempts of one
		// (in sync mode, where cp's closes upload one at a time): at least
		// one failure reaches cp, whatever the draws.
		srv.AddFault(osslocal.Fault{Op: "PutObject", Status: 503, After: 5, Count: 3})
		ops := []string{"PutObject", "UploadPart", "InitiateMultipartUpload", "CompleteMultipartUpload", "HeadObject", "ListObjectsV2",
			"CopyObject", "UploadPartCopy", "DeleteMultipleObjects", "DeleteObject"}
		for i, op := range ops {
			status := 503
			if i%2 == 1 {
				status = 500
			}
			rate := 0.2
			if strings.Contains(op, "Copy") || strings.HasPrefix(op, "Delete") {
				rate = 0.5 // a rename's requests: some fail past the SDK's retries
			}
			srv.AddFault(osslocal.Fault{Op: op, Status: status, Rate: rate, Seed: uint64(i)})
		}
		srv.AddFault(osslocal.Fault{Op: "PutObject", Cut: true, Rate: 0.1, Seed: 99})
		srv.AddFault(osslocal.Fault{Op: "UploadPart", Cut: true, Rate: 0.1, Seed: 98})
	}
	for _, mode := range []struct {
		name string
		opts []string
	}{
		{"sync", nil},
		{"writeback", []string{"writeback", "writeback_delay=0s"}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			srv := startServer(t)
			m := startMount(t, srv, append([]string{"part_size=1MiB"}, mode.opts...)...)
			faults(srv)
			var stderr bytes.Buffer
			cp := exec.Command("cp", "-r", src+"/.", m.path("tree"))
			cp.Stderr = &stderr
			os.Mkdir(m.path("tree"), 0o755)
			cpErr := cp.Run()
			reported := reportedPaths(stderr.String(), m.path("tree")+"/")
			// A directory rename (copies, then deletes) under the same
			// faults: whether or not mv succeeds, no file is lost, and a
			// failed one leaves no copies (unless deleting them failed too,
			// which is logged; then mv may move tree into moved/tree).
			mv, mvErr := exec.Command("mv", m.path("tree"), m.path("moved")).CombinedOutput()
			t.Logf("mv: %v %s", mvErr, mv)
			m.stop(t) // drains the write-back queue
			srv.ClearFaults()
			t.Logf("cp: %v; reported %v:\n%s", cpErr, reported, stderr.String())
			if (cpErr == nil) != (len(reported) == 0) {
				t.Fatalf("cp exited with %v but reported %v:\n%s", cpErr, reported, stderr.String())
			}
			if mode.name == "sync" && len(reported) == 0 {
				t.Fatal("no failure reached cp: the faults did not bite")
			}
			for name, data := range want {
				found := false
				for _, key := range []string{"tree/" + name, "moved/" + name, "moved/tree/" + name} {
					if !srv.exists(key) {
						continue
					}
					found = true
					if !bytes.Equal(srv.object(t, key), data) {
						t.Errorf("%s holds other bytes than the file copied", key)
					}
				}
				if !found && !isReported(reported, name) {
					t.Errorf("%s: cp was told it was written, and it is in the bucket under neither name", name)
				}
			}
			if !strings.Contains(m.logs.String(), "copies it made could not all be deleted") {
				for _, k := range srv.keys(t) {
					if strings.HasPrefix(k, "moved/") && (mvErr != nil || strings.HasPrefix(k, "moved/tree/")) {
						t.Errorf("%s: a failed rename's copy is left", k)
					}
				}
			}
			for _, p := range reported {
				if !m.logged("tree/" + p) {
					t.Errorf("no log line names %s, which cp reported", p)
				}
			}
		})
	}
}

// cpQuoted finds the paths cp quotes in its messages.
var cpQuoted = regexp.MustCompile(`'([^']*)'`)

// reportedPaths lists the paths below root that cp's messages name,
// relative to root.
func reportedPaths(stderr, root string) []string {
	var out []string
	for _, m := range cpQuoted.FindAllStringSubmatch(stderr, -1) {
		if rel, ok := strings.CutPrefix(m[1], root); ok {
			out = append(out, filepath.Clean(rel)) // cp says tree/./d0/f01
		}
	}
	return out
}

// isReported says whether name or a directory above it was reported.
func isReported(reported []string, name string) bool {
	for _, p := range reported {
		if name == p || strings.HasPrefix(name, p+"/") {
			return true
		}
	}
	return false
}

// rm -r with a share of the deletes, listings and HEADs failing at random:
// every object left in the bucket is one rm reported (or lies below a
// directory it reported), and rm's exit status says whether it did.
func TestRemovalUnderServerErrors(t *testing.T) {
	for _, mode := range []string{"sync", "writeback"} {
		t.Run(mode, func(t *testing.T) {
			srv := startServer(t)
			for i := range 15 {
				srv.putByOther(t, fmt.Sprintf("tree/d%d/f%02d", i%3, i), []byte{byte(i)})
			}
			opts := []string{}
			if mode == "writeback" {
				opts = append(opts, "writeback")
			}
			m := startMount(t, srv, opts...)
			// Three DeleteObjects in a row fail — all the SDK's attempts of
			// one unlink: at least one failure reaches rm.
			srv.AddFault(osslocal.Fault{Op: "DeleteObject", Status: 503, After: 3, Count: 3})
			for i, op := range []string{"DeleteObject", "HeadObject", "ListObjectsV2", "ListObjects"} {
				srv.AddFault(osslocal.Fault{Op: op, Status: 500, Rate: 0.2, Seed: uint64(i)})
			}
			out, rmErr := exec.Command("rm", "-r", m.path("tree")).CombinedOutput()
			reported := reportedPaths(string(out), m.path("")+"/")
			srv.ClearFaults()
			t.Logf("rm: %v; reported %v:\n%s", rmErr, reported, out)
			if rmErr == nil || len(reported) == 0 {
				t.Fatalf("rm exited with %v, reporting %v, with unlinks failing", rmErr, reported)
			}
			for _, k := range srv.keys(t) {
				if !isReported(reported, strings.TrimSuffix(k, "/")) {
					t.Errorf("%s is still in the bucket, and rm did not report it", k)
				}
			}
		})
	}
}

// Reads with a share of the GETs and HEADs failing or cut mid-body: cmp of
// each file against its source either finds them equal or fails with an
// I/O error — never different bytes. Files of several MiB are read with
// ranged GETs ahead of the reader.
func TestReadsUnderServerErrors(t *testing.T) {
	srv := startServer(t)
	src := t.TempDir()
	var names []string
	for i := range 12 {
		name := fmt.Sprintf("f%02d", i)
		data := randomBytes(t, 1000+i*(500<<10)) // up to 5.4 MiB
		srv.putByOther(t, name, data)
		if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	m := startMount(t, srv)
	srv.AddFault(osslocal.Fault{Op: "GetObject", Status: 503, Rate: 0.25, Seed: 1})
	srv.AddFault(osslocal.Fault{Op: "GetObject", CutBody: true, Rate: 0.25, Seed: 2})
	srv.AddFault(osslocal.Fault{Op: "HeadObject", Status: 500, Rate: 0.25, Seed: 3})
	equal := 0
	// Twice: the second reads of a file read whole come from the pages
	// the first left (fs/pages.go), which must be its bytes.
	for range 2 {
		for _, name := range names {
			out, err := exec.Command("cmp", filepath.Join(src, name), m.path(name)).CombinedOutput()
			switch {
			case err == nil:
				equal++
			case !strings.Contains(string(out), "Input/output error"):
				t.Errorf("%s: cmp: %v %s", name, err, out)
			}
		}
	}
	t.Logf("%d of %d reads equal, the rest EIO", equal, 2*len(names))
	if equal == 0 {
		t.Error("no read got through the faults")
	}
}

// A write-back mount killed (SIGKILL) while its uploads run against a
// server that fails a share of them — some uploaded, some in flight, some
// waiting to be tried again after a failed attempt: the next mount with
// the same cache directory uploads every file cp was told was written,
// byte for byte.
func TestCrashWhileUploadsFailAtRandom(t *testing.T) {
	src := t.TempDir()
	want := map[string][]byte{}
	for i := range 40 {
		name := fmt.Sprintf("d%d/f%02d", i%4, i)
		want[name] = randomBytes(t, 1000+i*1500)
		os.MkdirAll(filepath.Join(src, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(src, name), want[name], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv := startServer(t)
	dir, cacheDir := t.TempDir(), filepath.Join(t.TempDir(), "cache")
	m := startMountAt(t, srv, dir, cacheDir, "writeback", "writeback_delay=0s")
	srv.AddFault(osslocal.Fault{Op: "PutObject", Status: 503, Rate: 0.5, Seed: 4})
	srv.AddFault(osslocal.Fault{Op: "PutObject", Cut: true, Rate: 0.1, Seed: 5})
	run(t, "cp", "-r", src+"/.", m.path("tree"))
	waitUntil(t, "a failed attempt", func() bool {
		return strings.Contains(m.logs.String(), "write-back upload failed; retrying")
	})
	m.kill(t)
	srv.ClearFaults()
	uploaded := 0
	for name := range want {
		if srv.exists("tree/" + name) {
			uploaded++
		}
	}
	t.Logf("%d of %d files in the bucket at the crash", uploaded, len(want))
	m = startMountAt(t, srv, dir, cacheDir, "writeback")
	m.stop(t) // drains the replayed queue
	for name, data := range want {
		srv.sameObject(t, "tree/"+name, data)
	}
}
