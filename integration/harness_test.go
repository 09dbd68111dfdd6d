// Package integration mounts ossmount through the kernel (/dev/fuse) against
// an in-process osslocal server, drives it with real programs and raw
// system calls, and checks the objects in the server byte for byte.
package integration

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ossmount/ossmount/bucket/store"
	"github.com/ossmount/ossmount/integration/osslocal"
)

const (
	testBucket = "test-bucket"
	testKeyID  = "test-key-id"
	testSecret = "test-key-secret"
)

// ossmountBin is the binary under test, built once by TestMain.
var ossmountBin string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration tests mount through /dev/fuse and must run as root")
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "ossmount-bin-")
	if err != nil {
		panic(err)
	}
	ossmountBin = filepath.Join(dir, "ossmount")
	out, err := exec.Command("go", "build", "-o", ossmountBin, "../cmd/ossmount").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building ossmount: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is an osslocal instance on a loopback port.
type server struct {
	*osslocal.Server
	store *store.Store
	url   string
	// partlessUploadsMayStay lets a test end with multipart uploads open
	// that hold no part: a mount killed between the server's start of an
	// upload and its ledger's record of it leaves one (cache/multiparts.go),
	// which stores nothing and which the next mount cannot tell from
	// another client's.
	partlessUploadsMayStay bool
}

// startServer starts osslocal with buckets in memory.
func startServer(t *testing.T) *server { return startServerOn(t, store.NewMemory()) }

// startDiskServer starts osslocal with buckets on disk (durable writes).
func startDiskServer(t *testing.T) *server {
	t.Helper()
	st, err := store.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return startServerOn(t, st)
}

func startServerOn(t *testing.T, st *store.Store) *server {
	return startServerWith(t, st, func(h http.Handler) http.Handler { return h })
}

// startServerWith starts osslocal over st behind wrap, which sees every
// request first (a test holds one back to act while it runs).
func startServerWith(t *testing.T, st *store.Store, wrap func(http.Handler) http.Handler) *server {
	t.Helper()
	if err := st.CreateBucket(testBucket); err != nil {
		t.Fatal(err)
	}
	s := osslocal.New(osslocal.Config{Store: st, Keys: map[string]string{testKeyID: testSecret}})
	hs := httptest.NewServer(wrap(s))
	srv := &server{Server: s, store: st, url: hs.URL}
	// Registered before any mount, so run after their stops: a multipart
	// upload left open holds parts nobody sees (and on OSS, pays for).
	t.Cleanup(func() {
		hs.Close()
		open := st.Uploads
		if srv.partlessUploadsMayStay {
			open = st.UploadsHoldingParts
		}
		if keys, err := open(testBucket); err == nil && len(keys) > 0 {
			t.Errorf("multipart uploads left open on the server, of %q", keys)
		}
	})
	return srv
}

// startServerCountingHeads starts osslocal in memory, and returns with it
// how many HEADs of each key it has answered so far.
func startServerCountingHeads(t *testing.T) (srv *server, heads func() map[string]int) {
	var mu sync.Mutex
	counted := map[string]int{}
	srv = startServerWith(t, store.NewMemory(), func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodHead {
				mu.Lock()
				counted[strings.TrimPrefix(r.URL.Path, "/"+testBucket+"/")]++
				mu.Unlock()
			}
			h.ServeHTTP(w, r)
		})
	})
	return srv, func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(counted)
	}
}

// mountHoldingPut starts osslocal in memory and mounts it with opts; the
// server holds the first PUT of key back: started is closed when it
// arrives, and it goes on when release is called — at the latest before
// the test's unmount, so that a failed test can unmount.
func mountHoldingPut(t *testing.T, key string, opts ...string) (srv *server, m *mount, started chan struct{}, release func()) {
	t.Helper()
	return mountHolding(t, http.MethodPut, key, opts...)
}

// mountHolding is mountHoldingPut for requests of any method.
func mountHolding(t *testing.T, method, key string, opts ...string) (srv *server, m *mount, started chan struct{}, release func()) {
	t.Helper()
	return mountHoldingFirst(t, func(r *http.Request) bool {
		return r.Method == method && strings.HasSuffix(r.URL.Path, "/"+key)
	}, opts...)
}

// mountHoldingFirst is mountHolding for the first request that match
// picks.
func mountHoldingFirst(t *testing.T, match func(*http.Request) bool, opts ...string) (srv *server, m *mount, started chan struct{}, release func()) {
	t.Helper()
	wrap, started, release := holdFirst(match)
	srv = startServerWith(t, store.NewMemory(), wrap)
	m = startMount(t, srv, opts...)
	t.Cleanup(release) // runs before the mount's cleanup, registered earlier
	return srv, m, started, release
}

// holdFirst returns a server wrapper that holds back the first request
// matching: started is closed when it arrives, and it goes on when
// release is called.
func holdFirst(match func(*http.Request) bool) (wrap func(http.Handler) http.Handler, started chan struct{}, release func()) {
	started, hold := make(chan struct{}), make(chan struct{})
	var held, released sync.Once
	release = func() { released.Do(func() { close(hold) }) }
	wrap = func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if match(r) {
				first := false
				held.Do(func() { first = true })
				if first {
					close(started)
					<-hold
				}
			}
			h.ServeHTTP(w, r)
		})
	}
	return wrap, started, release
}

// inBackground runs op in a goroutine; its error arrives on the channel.
func inBackground(op func() error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- op() }()
	return done
}

// renameWhileHeld starts op, waits until it reaches the request the server
// holds (mountHolding's started), and renames from to to, which must not
// wait for op. finish releases the request and returns op's error.
func renameWhileHeld(t *testing.T, started <-chan struct{}, release func(), from, to string, op func() error) (finish func() error) {
	t.Helper()
	done := inBackground(op)
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("the operation did not wait for the held request: %v", err)
	}
	renamed := inBackground(func() error { return os.Rename(from, to) })
	waitUntil(t, "the rename, while the request is held", func() bool { return len(renamed) > 0 })
	if err := <-renamed; err != nil {
		t.Fatalf("rename: %v", err)
	}
	return func() error {
		release()
		return <-done
	}
}

// whileUploadHeld runs op while an upload is held (mountHoldingPut): it
// waits until the mount logs a line containing waiting — op waits for that
// upload — then releases the upload and returns op's error.
func whileUploadHeld(t *testing.T, m *mount, waiting string, release func(), op func() error) error {
	t.Helper()
	done := inBackground(op)
	waitUntil(t, "a log line: "+waiting, func() bool { return strings.Contains(m.logs.String(), waiting) })
	release()
	return <-done
}

// mountMode is a way of mounting that a test runs under.
type mountMode struct {
	name string
	opts []string
}

// bothModes are sync, and write-back with each upload started at its close.
var bothModes = []mountMode{{"sync", nil}, {"writeback", []string{"writeback", "writeback_delay=0s"}}}

// headGate holds the HEADs of keys whose path contains prefix (of files,
// and of directory markers if markers is set), once on, until `together`
// of them wait at once; then it lets all through. A HEAD that waits alone
// goes on after a second (a lookup before any scan), and after three of
// those the gate opens, for a failing test to end. It records the most
// that waited at once, apart for files and for markers: whether a mount
// asks one HEAD at a time or many, with no timing in the test's verdict.
type headGate struct {
	prefix   string
	markers  bool
	together int
	on       atomic.Bool

	mu       sync.Mutex
	waiting  map[bool]int   // GUARDED_BY(mu); by "is a marker"
	most     map[bool]int   // GUARDED_BY(mu)
	timeouts map[bool]int   // GUARDED_BY(mu)
	asked    map[string]int // GUARDED_BY(mu); HEADs by path
	gates    map[bool]chan struct{}
	opened   map[bool]*sync.Once
}

func newHeadGate(prefix string, markers bool, together int) *headGate {
	return &headGate{prefix: prefix, markers: markers, together: together, waiting: map[bool]int{}, most: map[bool]int{}, timeouts: map[bool]int{}, asked: map[string]int{},
		gates:  map[bool]chan struct{}{false: make(chan struct{}), true: make(chan struct{})},
		opened: map[bool]*sync.Once{false: new(sync.Once), true: new(sync.Once)}}
}

func (g *headGate) open(marker bool) { g.opened[marker].Do(func() { close(g.gates[marker]) }) }

// wrap is startServerWith's.
func (g *headGate) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		marker := strings.HasSuffix(r.URL.Path, "/")
		if g.on.Load() && r.Method == http.MethodHead && strings.Contains(r.URL.Path, g.prefix) && (g.markers || !marker) {
			g.mu.Lock()
			g.asked[r.URL.Path]++
			g.waiting[marker]++
			g.most[marker] = max(g.most[marker], g.waiting[marker])
			if g.waiting[marker] >= g.together {
				g.open(marker)
			}
			g.mu.Unlock()
			select {
			case <-g.gates[marker]:
			case <-time.After(time.Second):
				g.mu.Lock()
				if g.timeouts[marker]++; g.timeouts[marker] == 3 {
					g.open(marker)
				}
				g.mu.Unlock()
			}
			g.mu.Lock()
			g.waiting[marker]--
			g.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

// mostWaiting returns the most HEADs of files and of markers that waited
// at once.
func (g *headGate) mostWaiting() (files, markers int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.most[false], g.most[true]
}

// askedAgain returns the paths asked for more than once.
func (g *headGate) askedAgain() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var again []string
	for path, n := range g.asked {
		if n > 1 {
			again = append(again, path)
		}
	}
	slices.Sort(again)
	return again
}

// putByOther puts key into the test bucket as another client would,
// behind the mount's back.
func (s *server) putByOther(t *testing.T, key string, data []byte) {
	t.Helper()
	if _, err := s.store.Put(testBucket, key, bytes.NewReader(data), store.Attrs{}, false); err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
}

// object returns the content of key in the test bucket.
func (s *server) object(t *testing.T, key string) []byte {
	t.Helper()
	_, r, err := s.store.Open(testBucket, key, 0, -1)
	if err != nil {
		t.Fatalf("object %q: %v", key, err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func (s *server) exists(key string) bool {
	_, err := s.store.Head(testBucket, key)
	return err == nil
}

// keys lists every key in the test bucket.
func (s *server) keys(t *testing.T) []string {
	t.Helper()
	var keys []string
	after := ""
	for {
		res, err := s.store.List(testBucket, store.ListRequest{StartAfter: after, MaxKeys: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range res.Objects {
			keys = append(keys, o.Key)
		}
		if !res.Truncated {
			return keys
		}
		after = res.Next
	}
}

// mount is a running ossmount in the foreground.
type mount struct {
	dir      string
	cacheDir string
	srv      *server
	cmd      *exec.Cmd
	logs     *syncBuffer
	stopped  bool
	shown    bool // the logs went to the test's output
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// mountArgs returns the command line for srv with extra -o options.
func mountArgs(srv *server, mnt, cacheDir string, extra ...string) []string {
	opts := []string{"endpoint=" + srv.url, "path_style", "region=local", "cache_dir=" + cacheDir, "debug"}
	return []string{testBucket, mnt, "-o", strings.Join(append(opts, extra...), ",")}
}

func credentialsEnv() []string {
	return append(os.Environ(), "OSS_ACCESS_KEY_ID="+testKeyID, "OSS_ACCESS_KEY_SECRET="+testSecret)
}

// startMount mounts srv's bucket and waits until the mount is ready. The
// mount is stopped with SIGTERM at the end of the test, which must make
// ossmount exit 0 and leave no mount and no staging file behind.
func startMount(t *testing.T, srv *server, extra ...string) *mount {
	t.Helper()
	return startMountAt(t, srv, t.TempDir(), filepath.Join(t.TempDir(), "cache"), extra...)
}

// startMountAt mounts at dir with the given cache directory.
func startMountAt(t *testing.T, srv *server, dir, cacheDir string, extra ...string) *mount {
	t.Helper()
	return startMountVia(t, srv, dir, cacheDir, nil, extra...)
}

// startMountWithFileLimit mounts with ossmount's descriptor limit (soft
// and hard) at nofile.
func startMountWithFileLimit(t *testing.T, srv *server, nofile int, extra ...string) *mount {
	t.Helper()
	limit := []string{"prlimit", fmt.Sprintf("--nofile=%d", nofile), "--"}
	return startMountVia(t, srv, t.TempDir(), filepath.Join(t.TempDir(), "cache"), limit, extra...)
}

// startMountVia starts ossmount through the command line wrapper, which
// must exec it (its pid is ossmount's).
func startMountVia(t *testing.T, srv *server, dir, cacheDir string, wrapper []string, extra ...string) *mount {
	t.Helper()
	return launchMount(t, srv, dir, cacheDir, wrapper, nil, extra...)
}

// startMountLoggingTo mounts with ossmount's stderr on stderr, not in
// mount.logs.
func startMountLoggingTo(t *testing.T, srv *server, stderr io.Writer, extra ...string) *mount {
	t.Helper()
	return launchMount(t, srv, t.TempDir(), filepath.Join(t.TempDir(), "cache"), nil, stderr, extra...)
}

// launchMount starts ossmount through wrapper, its stderr on stderr (nil:
// mount.logs), and waits until the mount is ready.
func launchMount(t *testing.T, srv *server, dir, cacheDir string, wrapper []string, stderr io.Writer, extra ...string) *mount {
	t.Helper()
	m := &mount{dir: dir, cacheDir: cacheDir, srv: srv, logs: &syncBuffer{}}
	if stderr == nil {
		stderr = m.logs
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	args := append(append(wrapper, ossmountBin, "-f"), mountArgs(srv, m.dir, m.cacheDir, extra...)...)
	m.cmd = exec.Command(args[0], args[1:]...)
	m.cmd.Env = append(credentialsEnv(), "OSSMOUNT_READY_FD=3")
	m.cmd.ExtraFiles = []*os.File{w}
	m.cmd.Stderr = stderr
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	status, err := bufio.NewReader(r).ReadString('\n')
	r.Close()
	if strings.TrimSpace(status) != "ok" {
		m.cmd.Wait()
		t.Fatalf("mount failed: %q %v\nlogs:\n%s", status, err, m.logs)
	}
	t.Cleanup(func() { m.stop(t) })
	return m
}

// stopTimeout bounds ossmount's exit after SIGTERM; the longest drain in
// the suite takes a few seconds.
const stopTimeout = time.Minute

// stop sends SIGTERM and checks the exit.
func (m *mount) stop(t *testing.T) {
	t.Helper()
	if m.stopped {
		// Called again at the test's end: a test that failed after it
		// stopped the mount still gets its logs.
		m.showLogsIfFailed(t)
		return
	}
	m.stopped = true
	m.cmd.Process.Signal(syscall.SIGTERM)
	if err := m.wait(); err != nil {
		t.Errorf("ossmount exited with %v\nlogs:\n%s", err, m.logs)
	}
	if isMounted(m.dir) {
		t.Errorf("%s still mounted after SIGTERM", m.dir)
		syscall.Unmount(m.dir, syscall.MNT_DETACH)
	}
	for _, f := range filesBelow(m.cacheDir) {
		if filepath.Base(f) != "lock" && !isFiledCopy(m.cacheDir, f) { // the write-back journal's lock file stays
			t.Errorf("file left in the cache directory: %s", f)
		}
	}
	m.showLogsIfFailed(t)
}

// wait waits for ossmount to exit. One that has not within stopTimeout
// gets SIGQUIT: a hung unmount fails the test with ossmount's goroutines
// (the Go runtime prints them) instead of the suite's timeout.
func (m *mount) wait() error {
	dump := time.AfterFunc(stopTimeout, func() { m.cmd.Process.Signal(syscall.SIGQUIT) })
	defer dump.Stop()
	return m.cmd.Wait()
}

func (m *mount) showLogsIfFailed(t *testing.T) {
	if t.Failed() && !m.shown {
		m.shown = true
		t.Logf("ossmount logs:\n%s", m.logs)
	}
}

// isFiledCopy reports whether f is a copy kept for the next mount (or its
// lock): in CACHE/kept/NAMESPACE/, with a record naming its object.
func isFiledCopy(cacheDir, f string) bool {
	if filepath.Dir(filepath.Dir(filepath.Dir(f))) != cacheDir || filepath.Base(filepath.Dir(filepath.Dir(f))) != "kept" {
		return false
	}
	if filepath.Base(f) == ".lock" {
		return true
	}
	buf := make([]byte, 4096)
	n, err := unix.Getxattr(f, "user.ossmount.kept", buf)
	var rec struct{ Key, ETag string }
	return err == nil && json.Unmarshal(buf[:n], &rec) == nil && rec.Key != "" && rec.ETag != ""
}

// kill ends ossmount with SIGKILL, as a crash would, and detaches its
// dead mount.
func (m *mount) kill(t *testing.T) {
	t.Helper()
	m.stopped = true
	m.cmd.Process.Kill()
	m.cmd.Wait()
	if err := syscall.Unmount(m.dir, syscall.MNT_DETACH); err != nil {
		t.Fatalf("detaching the dead mount: %v", err)
	}
}

// filesBelow lists the regular files under dir.
func filesBelow(dir string) []string {
	var files []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	return files
}

func isMounted(dir string) bool {
	data, _ := os.ReadFile("/proc/mounts")
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == dir {
			return true
		}
	}
	return false
}

func (m *mount) path(rel string) string { return filepath.Join(m.dir, rel) }

// logged reports whether the mount logs a line containing text within ten
// seconds: its log comes through a pipe, and a line written before an
// operation returned may reach the test after it.
func (m *mount) logged(text string) bool {
	for end := time.Now().Add(10 * time.Second); !strings.Contains(m.logs.String(), text); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			return false
		}
	}
	return true
}

// forgetUnusedNodes makes the kernel forget the inodes it does not use
// (FUSE FORGET), as memory pressure may.
func forgetUnusedNodes() error { return os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0) }

// run runs a command and fails the test if it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// editAt writes data at off of an existing file opened for writing
// without truncation, and closes it.
func editAt(t *testing.T, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// sameObject fails unless key holds exactly want.
func (s *server) sameObject(t *testing.T, key string, want []byte) {
	t.Helper()
	got := s.object(t, key)
	if !bytes.Equal(got, want) {
		t.Fatalf("object %q: %d bytes, want %d (content differs)", key, len(got), len(want))
	}
}

func errnoOf(err error) syscall.Errno {
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return 0
}

// deadline bounds a wait on a condition that another process makes true.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// faultPut500 makes every PutObject fail with 500 InternalError.
var faultPut500 = osslocal.Fault{Op: "PutObject", Status: 500}
