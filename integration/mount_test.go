package integration

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// runOssmount runs ossmount in its default, detaching mode and returns its
// exit status and output.
func runOssmount(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(ossmountBin, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		t.Fatal(err)
	}
	return 0, string(out)
}

// The mount command refuses what cannot work with exit status 2 and one
// readable line, before anything is mounted.
func TestMountErrors(t *testing.T) {
	srv := startServer(t)
	mnt := t.TempDir()
	cacheDir := filepath.Join(t.TempDir(), "cache")
	wrongKey := append(os.Environ(), "OSS_ACCESS_KEY_ID="+testKeyID, "OSS_ACCESS_KEY_SECRET=wrong-secret")

	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"bad bucket name", credentialsEnv(), mountArgs(srv, mnt, cacheDir)[1:], "lowercase letters, digits and hyphens"},
		{"wrong credentials", wrongKey, mountArgs(srv, mnt, cacheDir), "denied"},
		{"missing bucket", credentialsEnv(), append([]string{"no-such-bucket"}, mountArgs(srv, mnt, cacheDir)[1:]...), "does not exist"},
		{"unreachable endpoint", credentialsEnv(), []string{testBucket, mnt, "-o", "endpoint=http://127.0.0.1:1,path_style,region=local,cache_dir=" + cacheDir}, "cannot reach"},
		{"bad prefix", credentialsEnv(), append([]string{testBucket + `:\bad`}, mountArgs(srv, mnt, cacheDir)[1:]...), "invalid prefix"},
		{"unknown flag", credentialsEnv(), append([]string{"--nope"}, mountArgs(srv, mnt, cacheDir)...), "unknown flag"},
		{"bad encryption", credentialsEnv(), mountArgs(srv, mnt, cacheDir, "sse=DES"), "want AES256, KMS or SM4"},
		{"key id without KMS", credentialsEnv(), mountArgs(srv, mnt, cacheDir, "sse=AES256", "sse_key_id=k1"), "needs server-side encryption KMS"},
		{"too many tags", credentialsEnv(), mountArgs(srv, mnt, cacheDir, "tagging=a=1&b=2&c=3&d=4&e=5&f=6&g=7&h=8&i=9&j=10&k=11"), "at most 10 tags"},
		{"cache inside the mountpoint", credentialsEnv(), mountArgs(srv, mnt, filepath.Join(mnt, "sub", ".cache")), "is inside the mountpoint"},
	} {
		args := tc.args
		if tc.name == "bad bucket name" {
			args = append([]string{"Bad_Bucket"}, tc.args...)
		}
		code, out := runOssmount(t, tc.env, args...)
		if code != 2 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d, output %q; want exit 2 and %q", tc.name, code, out, tc.want)
		}
		if strings.Contains(out, "wrong-secret") {
			t.Errorf("%s: output shows the secret", tc.name)
		}
		if isMounted(mnt) {
			t.Fatalf("%s: mounted anyway", tc.name)
		}
	}
}

// --help and --version answer on stdout with status 0 (--help was an
// unknown flag, status 2).
func TestHelpAndVersion(t *testing.T) {
	for flag, want := range map[string]string{"--help": "usage: ossmount", "-h": "usage: ossmount", "--version": "ossmount ", "-V": "ossmount "} {
		out, err := exec.Command(ossmountBin, flag).Output()
		if err != nil || !strings.HasPrefix(string(out), want) {
			t.Errorf("%s: %v, output %q", flag, err, out)
		}
	}
}

// Without -f, ossmount returns 0 once the mount is ready and keeps serving
// in the background until unmounted.
func TestDetachedMount(t *testing.T) {
	srv := startServer(t)
	mnt := t.TempDir()
	code, out := runOssmount(t, credentialsEnv(), mountArgs(srv, mnt, filepath.Join(t.TempDir(), "cache"), "log_file="+filepath.Join(t.TempDir(), "log"))...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	if !isMounted(mnt) {
		t.Fatal("not mounted after a successful exit")
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)
	if err := os.WriteFile(filepath.Join(mnt, "detached.txt"), []byte("works"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv.sameObject(t, "detached.txt", []byte("works"))
	if err := syscall.Unmount(mnt, 0); err != nil {
		t.Fatalf("umount: %v", err)
	}
}

// A user other than root mounts through fusermount3; when it refuses, the
// mount's error is fusermount3's own reason, not go-fuse's "fusermount
// exited with code 256" — detached, fusermount3's stderr went nowhere.
// Here the user may not write to the mountpoint (and, on machines whose
// /dev/fuse is root's alone, may not open that either).
func TestFusermountRefusalIsSaid(t *testing.T) {
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Fatal("fusermount3 is not installed (Debian's fuse3)")
	}
	srv := startServer(t)
	// Where nobody can run the binary and keep a cache.
	dir, err := os.MkdirTemp("", "ossmount-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin, cacheDir, mnt := filepath.Join(dir, "ossmount"), filepath.Join(dir, "cache"), filepath.Join(dir, "mnt")
	data, err := os.ReadFile(ossmountBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(mnt, 0o755) // root's
	os.Mkdir(cacheDir, 0o700)
	if err := os.Chown(cacheDir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	for _, foreground := range []bool{false, true} {
		args := mountArgs(srv, mnt, cacheDir)
		if foreground {
			args = append([]string{"-f"}, args...)
		}
		cmd := exec.Command(bin, args...)
		cmd.Env = credentialsEnv()
		runAsNobody(cmd)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 {
			t.Errorf("foreground=%v: %v, want exit status 2\n%s", foreground, err, out)
		}
		if !strings.Contains(string(out), "fusermount3: ") || strings.Contains(string(out), "exited with code") {
			t.Errorf("foreground=%v: the refusal does not say fusermount3's reason:\n%s", foreground, out)
		}
		if isMounted(mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
			t.Fatalf("foreground=%v: mounted", foreground)
		}
	}
}

// With allow_other, other users are held to the files' modes and owners
// (default_permissions): a user could read a 0600 file of root's, and
// replace or delete root's files, before.
func TestAllowOtherChecksPermissions(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "allow_other")
	writeFile(t, m.path("private"), []byte("secret"))
	if err := os.Chmod(m.path("private"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeFile(t, m.path("roots"), []byte("keep"))
	if err := os.Mkdir(m.path("shared"), 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(m.path("shared"), 0o777) // past the umask
	for _, refused := range []string{"cat /dev/fd/3/private", "echo replaced > /dev/fd/3/roots", "rm -f /dev/fd/3/roots", "mkdir /dev/fd/3/new"} {
		if shellAsNobodyIn(t, m.dir, refused) == nil {
			t.Errorf("nobody could: %s", refused)
		}
	}
	if err := shellAsNobodyIn(t, m.dir, "echo mine > /dev/fd/3/shared/nobodys"); err != nil {
		t.Fatalf("nobody could not write in a 0777 directory: %v", err)
	}
	srv.sameObject(t, "roots", []byte("keep"))
	srv.sameObject(t, "shared/nobodys", []byte("mine\n"))
	if o, _ := srv.store.Head(testBucket, "shared/nobodys"); o.Meta["uid"] != fmt.Sprint(nobody) {
		t.Errorf("the new file's owner: %v", o.Meta)
	}
}

// A mount whose ossmount was killed is left dead at its mountpoint
// ("transport endpoint is not connected"); mounting there again unmounts
// it first, with a warning — it failed with "not a directory".
func TestMountOverADeadMount(t *testing.T) {
	srv := startServer(t)
	dir := t.TempDir()
	m := startMountAt(t, srv, dir, filepath.Join(t.TempDir(), "cache"))
	m.stopped = true
	m.cmd.Process.Kill()
	m.cmd.Wait()
	if _, err := os.Stat(dir); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("after SIGKILL the mountpoint answers %v, want ENOTCONN", err)
	}
	m = startMountAt(t, srv, dir, filepath.Join(t.TempDir(), "cache"))
	if !strings.Contains(m.logs.String(), "unmounted a dead ossmount mount") {
		t.Error("no warning about the dead mount")
	}
	writeFile(t, m.path("after.txt"), []byte("works"))
	srv.sameObject(t, "after.txt", []byte("works"))
	m.stop(t)
	if isMounted(dir) {
		t.Error("a mount is left at the mountpoint")
	}
}

// ossfs's mp_umask sets the mount root's mode: with allow_other (and so
// the kernel's permission checks) mp_umask=000 lets other users write at
// the root, as ossfs users' fstab lines expect. It was ignored, with a
// warning, and the root was 0755.
func TestMpUmaskOpensTheRoot(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "allow_other", "mp_umask=000")
	if fi, err := os.Stat(m.dir); err != nil || fi.Mode().Perm() != 0o777 {
		t.Fatalf("the root: %v %v, want 0777", fi.Mode(), err)
	}
	if err := shellAsNobodyIn(t, m.dir, "echo theirs > /dev/fd/3/at-the-root"); err != nil {
		t.Fatalf("nobody could not write at the root: %v", err)
	}
	srv.sameObject(t, "at-the-root", []byte("theirs\n"))
	if strings.Contains(m.logs.String(), "mp_umask") {
		t.Errorf("mp_umask was warned about:\n%s", m.logs)
	}
}

// nobody is the user the tests run programs as to be someone other than
// root (Debian's nobody).
const nobody = 65534

// runAsNobody makes cmd run as nobody.
func runAsNobody(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
}

// shellAsNobodyIn runs script with sh as nobody, with dir as /dev/fd/3:
// the test's directories above a mountpoint are 0700, so nobody reaches
// it through a descriptor opened as root. Its output is logged on failure.
func shellAsNobodyIn(t *testing.T, dir, script string) error {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	cmd := exec.Command("sh", "-c", script)
	cmd.ExtraFiles = []*os.File{d}
	runAsNobody(cmd)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Logf("%s: %v: %s", script, err, out)
	}
	return err
}

// A credentials file others can read is refused, as ossfs does.
func TestPasswdFilePermissions(t *testing.T) {
	srv := startServer(t)
	mnt := t.TempDir()
	passwd := filepath.Join(t.TempDir(), "passwd")
	writeFile(t, passwd, []byte(testBucket+":"+testKeyID+":"+testSecret+"\n"))
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	args := mountArgs(srv, mnt, filepath.Join(t.TempDir(), "cache"), "passwd_file="+passwd)

	os.Chmod(passwd, 0o644)
	code, out := runOssmount(t, env, args...)
	if code != 2 || !strings.Contains(out, "chmod 600") {
		t.Fatalf("mode 0644: exit %d, %q", code, out)
	}
	if strings.Contains(out, testSecret) {
		t.Fatal("output shows the secret")
	}
	os.Chmod(passwd, 0o600)
	if code, out = runOssmount(t, env, args...); code != 0 {
		t.Fatalf("mode 0600: exit %d, %q", code, out)
	}
	if err := syscall.Unmount(mnt, 0); err != nil {
		t.Fatalf("umount: %v", err)
	}
}

// SIGTERM while a program still has a file open: the mount is detached,
// the program's close still uploads, then ossmount exits 0.
func TestSigtermWithOpenFile(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	f, err := os.Create(m.path("open-at-sigterm.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("before the signal, "); err != nil {
		t.Fatal(err)
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	waitUntil(t, "the lazy unmount", func() bool { return strings.Contains(m.logs.String(), "detaching") })
	if _, err := f.WriteString("after it"); err != nil {
		t.Fatalf("write after SIGTERM: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close after SIGTERM: %v", err)
	}
	srv.sameObject(t, "open-at-sigterm.txt", []byte("before the signal, after it"))
	m.stop(t)
}

// SIGHUP — a foreground mount's terminal hung up — unmounts as SIGTERM
// does; it killed ossmount at once, and left a dead mount.
func TestSighupUnmounts(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	writeFile(t, m.path("before-hup.txt"), []byte("kept"))
	m.stopped = true
	m.cmd.Process.Signal(syscall.SIGHUP)
	if err := m.cmd.Wait(); err != nil {
		t.Errorf("ossmount exited with %v after SIGHUP, want 0\n%s", err, m.logs)
	}
	if isMounted(m.dir) {
		syscall.Unmount(m.dir, syscall.MNT_DETACH)
		t.Fatal("still mounted after SIGHUP")
	}
	srv.sameObject(t, "before-hup.txt", []byte("kept"))
}

// With its logs in a file, SIGHUP reopens the file (logrotate renames it,
// then sends the signal) and the mount goes on.
func TestSighupReopensTheLogFile(t *testing.T) {
	srv := startServer(t)
	logPath := filepath.Join(t.TempDir(), "ossmount.log")
	m := startMount(t, srv, "log_file="+logPath)
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	m.cmd.Process.Signal(syscall.SIGHUP)
	waitUntil(t, "a new log file", func() bool {
		data, _ := os.ReadFile(logPath)
		return strings.Contains(string(data), "reopened the log file")
	})
	writeFile(t, m.path("after-hup.txt"), []byte("still mounted"))
	srv.sameObject(t, "after-hup.txt", []byte("still mounted"))
	m.stop(t)
	if data, _ := os.ReadFile(logPath); !strings.Contains(string(data), "unmounted") {
		t.Errorf("the new log file lacks the unmount:\n%s", data)
	}
}

// A foreground mount whose stderr reader went away (`ossmount -f ... |
// head`) keeps serving: its next log line killed it with SIGPIPE, leaving
// a dead mount.
func TestClosedStderrDoesNotKillTheMount(t *testing.T) {
	srv := startServer(t)
	logR, logW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	m := startMountLoggingTo(t, srv, logW)
	logW.Close()
	logR.Close()                          // the reader goes away
	m.cmd.Process.Signal(syscall.SIGUSR1) // a status line on stderr
	writeFile(t, m.path("after.txt"), []byte("still serving"))
	srv.sameObject(t, "after.txt", []byte("still serving"))
	m.stop(t) // exit 0, nothing left mounted
}

// -o storage_class and -o acl ride along with every upload.
func TestStorageClassAndACL(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "storage_class=IA", "acl=private")
	writeFile(t, m.path("classy.txt"), []byte("x"))
	o, err := srv.store.Head(testBucket, "classy.txt")
	if err != nil {
		t.Fatal(err)
	}
	if o.StorageClass != "IA" || o.ACL != "private" || o.ContentType != "text/plain; charset=utf-8" {
		t.Fatalf("object attributes %+v", o.Attrs)
	}
	if o.Meta["mode"] != "33188" || o.Meta["uid"] != "0" || o.Meta["mtime"] == "" {
		t.Fatalf("metadata %v", o.Meta)
	}
}

// -o sse, sse_key_id and tagging ride along with every object the mount
// writes: uploads, streamed and SDK multipart uploads, directory markers,
// and the copies behind rename and chmod.
func TestEncryptionAndTagging(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "sse=KMS", "sse_key_id=key-1", "tagging=team=storage&project=oss+mount", "part_size=1MiB")
	writeFile(t, m.path("small.txt"), []byte("x"))
	writeFile(t, m.path("streamed.bin"), randomBytes(t, 3<<20+5))
	// Edited in the middle: uploaded whole by the SDK's Uploader.
	writeFile(t, m.path("edited.bin"), randomBytes(t, 3<<20))
	editAt(t, m.path("edited.bin"), 1<<20, []byte("edit"))
	if err := os.Mkdir(m.path("dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, m.path("moved-from"), []byte("y"))
	if err := os.Rename(m.path("moved-from"), m.path("dir/moved-to")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(m.path("small.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	m.stop(t) // sends held metadata (the chmod)
	for _, key := range []string{"small.txt", "streamed.bin", "edited.bin", "dir/", "dir/moved-to"} {
		o, err := srv.store.Head(testBucket, key)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		if o.SSE != "KMS" || o.SSEKeyID != "key-1" || o.Tagging != "project=oss+mount&team=storage" {
			t.Errorf("%s: encryption %q key %q tags %q", key, o.SSE, o.SSEKeyID, o.Tagging)
		}
	}
	if o, _ := srv.store.Head(testBucket, "small.txt"); o.Meta["mode"] != "33152" {
		t.Errorf("chmod not applied: mode %s", o.Meta["mode"])
	}
}

// DESIGN §7: usable from /etc/fstab: mount(8) runs
// /sbin/mount.fuse.ossmount (a link to ossmount) with fstab options.
func TestMountHelper(t *testing.T) {
	const helper = "/sbin/mount.fuse.ossmount"
	if _, err := os.Lstat(helper); err == nil {
		t.Fatalf("%s exists already; the test will not replace it", helper)
	}
	if err := os.Symlink(ossmountBin, helper); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(helper)
	srv := startServer(t)
	mnt := t.TempDir()
	// The kernel's flags hold (a hardened fstab line's noexec was dropped);
	// access-time options are taken without a warning.
	opts := "rw,nosuid,nodev,noexec,noatime,_netdev,endpoint=" + srv.url + ",path_style,region=local,cache_dir=" + filepath.Join(t.TempDir(), "cache")
	cmd := exec.Command("mount", "-t", "fuse.ossmount", testBucket, mnt, "-o", opts)
	cmd.Env = credentialsEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mount -t fuse.ossmount: %v\n%s", err, out)
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)
	if strings.Contains(string(out), "ignoring option") {
		t.Errorf("warned about an fstab option:\n%s", out)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	if want := int64(unix.ST_NOEXEC | unix.ST_NOSUID | unix.ST_NODEV); st.Flags&want != want {
		t.Errorf("mount flags %#x, want noexec, nosuid and nodev (%#x)", st.Flags, want)
	}
	writeFile(t, filepath.Join(mnt, "via-fstab.txt"), []byte("mounted by mount(8)"))
	srv.sameObject(t, "via-fstab.txt", []byte("mounted by mount(8)"))
	program := filepath.Join(mnt, "true")
	run(t, "cp", "/bin/true", program)
	if err := exec.Command(program).Run(); !errors.Is(err, syscall.EACCES) {
		t.Errorf("a program run from a noexec mount: %v, want EACCES", err)
	}
	if err := syscall.Unmount(mnt, 0); err != nil {
		t.Fatalf("umount: %v", err)
	}
}

// Behind a proxy (HTTP_PROXY, HTTPS_PROXY, NO_PROXY, which ossfs's libcurl
// and Go programs honour) requests go through it; they went straight to
// the endpoint, which such a host cannot reach.
func TestProxyFromEnvironment(t *testing.T) {
	srv := startServer(t)
	target, err := url.Parse(srv.url)
	if err != nil {
		t.Fatal(err)
	}
	var proxied atomic.Int32
	proxy := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		proxied.Add(1)
		pr.SetURL(target)
		pr.Out.Host = pr.In.Host
	}})
	t.Cleanup(proxy.Close)
	// A name only the proxy reaches: nothing resolves it.
	endpoint := "http://oss.ossmount-test.invalid:" + target.Port()
	m := startMountVia(t, srv, t.TempDir(), filepath.Join(t.TempDir(), "cache"), []string{"env", "-u", "NO_PROXY", "-u", "no_proxy", "HTTP_PROXY=" + proxy.URL},
		"endpoint="+endpoint)
	writeFile(t, m.path("via-proxy"), []byte("through the proxy"))
	srv.sameObject(t, "via-proxy", []byte("through the proxy"))
	if proxied.Load() == 0 {
		t.Fatal("no request went through the proxy")
	}
}

// DESIGN §7: -o ram_role takes credentials from the ECS metadata service
// (here a stand-in at a URL, the form ossfs's ram_role takes), security
// token included; a role it does not know stops the mount with exit 2 and
// one line that shows no secret.
func TestRAMRole(t *testing.T) {
	srv := startServer(t)
	var fetches atomic.Int32
	meta := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/latest/meta-data/ram/security-credentials/ossmount-role" {
			http.NotFound(w, r)
			return
		}
		fetches.Add(1)
		json.NewEncoder(w).Encode(map[string]string{"Code": "Success", "AccessKeyId": testKeyID, "AccessKeySecret": testSecret,
			"SecurityToken": "role-token", "Expiration": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	}))
	defer meta.Close()
	var env []string // no OSS_ credentials: the role is the only source
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OSS_") {
			env = append(env, kv)
		}
	}
	roles := meta.URL + "/latest/meta-data/ram/security-credentials/"
	mnt, cacheDir := t.TempDir(), filepath.Join(t.TempDir(), "cache")

	code, out := runOssmount(t, env, mountArgs(srv, mnt, cacheDir, "ram_role="+roles+"no-such-role")...)
	if code != 2 || !strings.Contains(out, "denied") || !strings.Contains(out, "no ECS RAM role credentials") || !strings.Contains(out, "HTTP 404") {
		t.Fatalf("unknown role: exit %d, %q", code, out)
	}

	code, out = runOssmount(t, env, mountArgs(srv, mnt, cacheDir, "ram_role="+roles+"ossmount-role", "log_file="+filepath.Join(t.TempDir(), "log"))...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	defer syscall.Unmount(mnt, syscall.MNT_DETACH)
	if err := os.WriteFile(filepath.Join(mnt, "by-role.txt"), []byte("role"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv.sameObject(t, "by-role.txt", []byte("role"))
	if fetches.Load() == 0 {
		t.Fatal("the metadata service was never asked")
	}
	if err := syscall.Unmount(mnt, 0); err != nil {
		t.Fatalf("umount: %v", err)
	}
}

// A mount that the kernel made but that then failed to come up — here for
// want of descriptors, somewhere between 6 and 20 of them — is removed
// again, not left in the way as a dead mount ("transport endpoint is not
// connected"). At each limit the mount works or fails; it never ends half
// way.
func TestFailedMountLeavesNoMount(t *testing.T) {
	srv := startServer(t)
	for _, mode := range bothModes {
		failed := 0
		for n := 6; n <= 20; n++ {
			mnt := t.TempDir()
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("prlimit", append([]string{"--nofile=" + strconv.Itoa(n), ossmountBin, "-f"},
				mountArgs(srv, mnt, filepath.Join(t.TempDir(), "cache"), mode.opts...)...)...)
			cmd.Env = append(credentialsEnv(), "OSSMOUNT_READY_FD=3")
			cmd.ExtraFiles = []*os.File{w}
			var logs strings.Builder
			cmd.Stderr = &logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			w.Close()
			status, _ := bufio.NewReader(r).ReadString('\n') // "ok", an error, or nothing if it died
			r.Close()
			if strings.TrimSpace(status) == "ok" {
				if !isMounted(mnt) {
					t.Fatalf("%s, %d descriptors: ready but not mounted", mode.name, n)
				}
				cmd.Process.Signal(syscall.SIGTERM)
				if err := cmd.Wait(); err != nil {
					t.Fatalf("%s, %d descriptors: after SIGTERM: %v\n%s", mode.name, n, err, logs.String())
				}
				continue
			}
			cmd.Wait()
			failed++
			if isMounted(mnt) {
				t.Errorf("%s, %d descriptors: the failed mount left a mount behind: %s", mode.name, n, logs.String())
				syscall.Unmount(mnt, syscall.MNT_DETACH)
			}
		}
		if failed == 0 {
			t.Errorf("%s: no limit made the mount fail", mode.name)
		}
	}
}
