package integration

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
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

// goNet is the tree the rsync test copies: about 415 files.
const goNet = "/usr/local/go/src/net"

// requests returns the request counts since before, as "Op=N" sorted.
func requestsSince(before, after map[string]int) string {
	var parts []string
	total := 0
	for op, n := range after {
		if d := n - before[op]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", op, d))
			total += d
		}
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d requests (%s)", total, strings.Join(parts, " "))
}

// DESIGN §4, §5: rsync -a lands every file with its mode and mtime in
// git: lock files renamed into place, objects written read-only and
// renamed, fsyncs, a repack that deletes what it packed. The repository
// is whole after the unmount, seen through a fresh mount.
func TestGitRepository(t *testing.T) {
	for _, mode := range randomModes[:2] { // sync, write-back
		t.Run(mode.name, func(t *testing.T) {
			srv := startServer(t)
			m := startMount(t, srv, mode.opts...)
			repo := m.path("repo")
			git := func(args ...string) string {
				return run(t, "git", append([]string{"-C", repo, "-c", "user.name=t", "-c", "user.email=t@t"}, args...)...)
			}
			run(t, "git", "init", "-q", repo)
			run(t, "cp", "-r", filepath.Join(goNet, "http", "httptest"), repo)
			git("add", "-A")
			git("commit", "-qm", "one")
			f, err := os.OpenFile(filepath.Join(repo, "httptest", "server.go"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString("// changed\n")
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			git("commit", "-qam", "two")
			git("gc", "-q")
			want := git("log", "--format=%H %s")
			m.stop(t)

			repo = startMount(t, srv).path("repo")
			if got := git("log", "--format=%H %s"); got != want {
				t.Fatalf("log after the unmount:\n%s\nwant:\n%s", got, want)
			}
			git("fsck", "--strict")
			if status := git("status", "--porcelain"); status != "" {
				t.Fatalf("status after the unmount:\n%s", status)
			}
		})
	}
}

// SQLite: a rollback journal created and deleted per transaction, pages
// rewritten in place, fsyncs, a vacuum that rewrites the whole file. The
// database is whole after the unmount, seen through a fresh mount.
func TestSQLiteDatabase(t *testing.T) {
	for _, mode := range randomModes[:2] { // sync, write-back
		t.Run(mode.name, func(t *testing.T) {
			srv := startServer(t)
			m := startMount(t, srv, mode.opts...)
			var script strings.Builder
			script.WriteString("create table t(a integer primary key, b text);\n")
			for tx := 0; tx < 4; tx++ {
				script.WriteString("begin;\n")
				for i := 0; i < 50; i++ {
					fmt.Fprintf(&script, "insert into t(b) values ('%s%d');\n", strings.Repeat("x", 100), tx*50+i)
				}
				script.WriteString("commit;\n")
			}
			script.WriteString("update t set b = 'updated' where a % 3 = 0;\ndelete from t where a % 5 = 0;\nvacuum;\n")
			sqlite := func(db, sql string) string {
				cmd := exec.Command("sqlite3", db)
				cmd.Stdin = strings.NewReader(sql)
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("sqlite3: %v\n%s", err, out)
				}
				return strings.TrimSpace(string(out))
			}
			sqlite(m.path("db.sqlite"), script.String())
			const query = "select count(*), sum(b = 'updated') from t; pragma integrity_check;"
			want := sqlite(m.path("db.sqlite"), query)
			if want != "160|53\nok" {
				t.Fatalf("through the mount: %q", want)
			}
			m.stop(t)
			if got := sqlite(startMount(t, srv).path("db.sqlite"), query); got != want {
				t.Fatalf("after the unmount: %q, want %q", got, want)
			}
			if srv.exists("db.sqlite-journal") {
				t.Error("the rollback journal is still in the bucket")
			}
		})
	}
}

// metadata, and a second run (also after a remount) has nothing to do.
func TestRsyncTree(t *testing.T) {
	src := goNet
	if _, err := os.Stat(src); err != nil {
		t.Fatalf("test tree: %v", err)
	}
	srv := startServer(t)
	m := startMount(t, srv)

	before := srv.Counts()
	start := time.Now()
	run(t, "rsync", "-a", src+"/", m.path("net")+"/")
	t.Logf("rsync -a first run: %v, %s", time.Since(start).Round(time.Millisecond), requestsSince(before, srv.Counts()))

	files := 0
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		files++
		rel, _ := filepath.Rel(src, p)
		key := "net/" + rel
		want, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		srv.sameObject(t, key, want)
		o, _ := srv.store.Head(testBucket, key)
		st := fi.Sys().(*syscall.Stat_t)
		if o.Meta["mode"] != strconv.FormatUint(uint64(st.Mode), 10) {
			t.Errorf("%s: mode %s, want %d", key, o.Meta["mode"], st.Mode)
		}
		if sec, _, _ := strings.Cut(o.Meta["mtime"], "."); sec != strconv.FormatInt(fi.ModTime().Unix(), 10) {
			t.Errorf("%s: mtime %s, want %d", key, o.Meta["mtime"], fi.ModTime().Unix())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d files", files)

	before = srv.Counts()
	start = time.Now()
	if out := run(t, "rsync", "-ai", src+"/", m.path("net")+"/"); out != "" {
		t.Fatalf("second rsync -ai changed things:\n%s", out)
	}
	t.Logf("rsync -ai second run: %v, %s", time.Since(start).Round(time.Millisecond), requestsSince(before, srv.Counts()))

	m.stop(t)
	m = startMount(t, srv)
	before = srv.Counts()
	start = time.Now()
	if out := run(t, "rsync", "-ai", src+"/", m.path("net")+"/"); out != "" {
		t.Fatalf("rsync -ai after remount changed things:\n%s", out)
	}
	t.Logf("rsync -ai after remount: %v, %s", time.Since(start).Round(time.Millisecond), requestsSince(before, srv.Counts()))
	// Cold cache: every file reads back the same.
	run(t, "diff", "-r", src, m.path("net"))
}

func TestTarRoundTrip(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	tree := filepath.Join(t.TempDir(), "tree")
	for i := 0; i < 30; i++ {
		writeFile(t, filepath.Join(tree, fmt.Sprintf("d%d/f%d.dat", i%3, i)), randomBytes(t, 500*i))
	}
	os.Chmod(filepath.Join(tree, "d0/f0.dat"), 0o600)
	os.Symlink("d1/f1.dat", filepath.Join(tree, "link"))
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(filepath.Join(tree, "d2/f2.dat"), old, old)
	orig := filepath.Join(t.TempDir(), "orig.tar")
	run(t, "tar", "-cf", orig, "-C", tree, ".")

	os.Mkdir(m.path("x"), 0o755)
	run(t, "tar", "-xf", orig, "-C", m.path("x"))
	again := filepath.Join(t.TempDir(), "again.tar")
	run(t, "tar", "-cf", again, "-C", m.path("x"), ".")
	list := func(archive string) string {
		lines := strings.Split(strings.TrimSpace(run(t, "tar", "-tvf", archive, "--full-time")), "\n")
		sort.Strings(lines)
		return strings.Join(lines, "\n")
	}
	if a, b := list(orig), list(again); a != b {
		t.Fatalf("archives differ:\n%s\n---\n%s", a, b)
	}
	out := filepath.Join(t.TempDir(), "out")
	os.Mkdir(out, 0o755)
	run(t, "tar", "-xf", again, "-C", out)
	run(t, "diff", "-r", tree, out)
}

func TestMoveCopyChmodTouch(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	writeFile(t, m.path("a.txt"), []byte("alpha"))
	writeFile(t, m.path("b.txt"), []byte("beta"))

	run(t, "mv", m.path("a.txt"), m.path("moved.txt"))
	if srv.exists("a.txt") || string(srv.object(t, "moved.txt")) != "alpha" {
		t.Fatalf("mv of a file: keys %v", srv.keys(t))
	}
	run(t, "mv", m.path("moved.txt"), m.path("b.txt"))
	if keys := srv.keys(t); strings.Join(keys, ",") != "b.txt" || string(srv.object(t, "b.txt")) != "alpha" {
		t.Fatalf("mv over a file: keys %v", keys)
	}

	for i := 0; i < 5; i++ {
		writeFile(t, m.path(fmt.Sprintf("dir/sub/f%d", i)), []byte{byte(i)})
	}
	before := srv.Counts()
	run(t, "mv", m.path("dir"), m.path("renamed"))
	keys := strings.Join(srv.keys(t), ",")
	if strings.Contains(keys, "dir/") || !strings.Contains(keys, "renamed/sub/f4") || !srv.exists("renamed/sub/") {
		t.Fatalf("mv of a directory: keys %v", keys)
	}
	// Its old objects go in one request.
	if after := srv.Counts(); after["DeleteMultipleObjects"] != before["DeleteMultipleObjects"]+1 || after["DeleteObject"] != before["DeleteObject"] {
		t.Errorf("mv of a directory made %s, want one DeleteMultipleObjects and no DeleteObject", requestsSince(before, after))
	}
	if data, err := os.ReadFile(m.path("renamed/sub/f3")); err != nil || !bytes.Equal(data, []byte{3}) {
		t.Fatalf("read after directory rename: %v %v", data, err)
	}

	// cp -a keeps modes and times.
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "exec.sh"), []byte("#!/bin/sh\n"))
	os.Chmod(filepath.Join(src, "exec.sh"), 0o751)
	when := time.Date(2021, 6, 7, 8, 9, 10, 123456789, time.UTC)
	os.Chtimes(filepath.Join(src, "exec.sh"), when, when)
	run(t, "cp", "-a", src, m.path("copied"))
	fi, err := os.Stat(m.path("copied/exec.sh"))
	if err != nil || fi.Mode().Perm() != 0o751 || !fi.ModTime().Equal(when) {
		t.Fatalf("cp -a: %v %v %v", fi.Mode(), fi.ModTime(), err)
	}

	run(t, "chmod", "600", m.path("b.txt"))
	run(t, "touch", "-d", "2019-05-06 07:08:09", m.path("b.txt"))
	run(t, "sync", m.path("b.txt")) // held metadata goes out at fsync
	o, _ := srv.store.Head(testBucket, "b.txt")
	wantMtime := time.Date(2019, 5, 6, 7, 8, 9, 0, time.Local).Unix()
	if o.Meta["mode"] != strconv.Itoa(syscall.S_IFREG|0o600) || o.Meta["mtime"] != strconv.FormatInt(wantMtime, 10) {
		t.Fatalf("chmod/touch -d metadata: %v", o.Meta)
	}
	// After a remount the attributes come back from the bucket.
	m.stop(t)
	m = startMount(t, srv)
	fi, err = os.Stat(m.path("b.txt"))
	if err != nil || fi.Mode().Perm() != 0o600 || fi.ModTime().Unix() != wantMtime {
		t.Fatalf("after remount: %v %v %v", fi.Mode(), fi.ModTime(), err)
	}
}

func TestSedAndEditorSave(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	writeFile(t, m.path("conf/app.conf"), []byte("color=red\nsize=1\n"))
	run(t, "sed", "-i", "s/red/blue/", m.path("conf/app.conf"))
	srv.sameObject(t, "conf/app.conf", []byte("color=blue\nsize=1\n"))

	// An editor's save: write a temporary file, fsync, rename over.
	tmp := m.path("conf/.app.conf.swp")
	f, err := os.Create(tmp)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("color=green\n")
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	if err := os.Rename(tmp, m.path("conf/app.conf")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close after rename: %v", err)
	}
	if keys := strings.Join(srv.keys(t), ","); keys != "conf/,conf/app.conf" {
		t.Fatalf("keys after editor save: %s", keys)
	}
	srv.sameObject(t, "conf/app.conf", []byte("color=green\n"))

	// A file renamed while dirty is uploaded straight to its new name.
	copies := srv.Count("CopyObject")
	g, err := os.Create(m.path("conf/draft"))
	if err != nil {
		t.Fatal(err)
	}
	g.WriteString("renamed while open")
	if err := os.Rename(m.path("conf/draft"), m.path("conf/final")); err != nil {
		t.Fatal(err)
	}
	srv.sameObject(t, "conf/final", []byte("renamed while open"))
	if err := g.Close(); err != nil {
		t.Fatalf("close after rename: %v", err)
	}
	if srv.exists("conf/draft") || srv.Count("CopyObject") != copies {
		t.Fatalf("dirty rename: keys %v, %d copies", srv.keys(t), srv.Count("CopyObject")-copies)
	}
}

// Random-access edits give the same bytes as on a local file.
func TestRandomAccessEdits(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	initial := randomBytes(t, 3<<20+123)
	local := filepath.Join(t.TempDir(), "local")
	writeFile(t, local, initial)
	writeFile(t, m.path("remote"), initial)

	edit := func(path string) {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte("MIDDLE-OVERWRITE"), 1<<20+7)
		f.Seek(0, 2)
		f.Write([]byte("appended tail"))
		if err := f.Close(); err != nil {
			t.Fatalf("close %s: %v", path, err)
		}
		for _, s := range []string{" one", " two"} {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte(s))
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	edit(local)
	edit(m.path("remote"))
	want, _ := os.ReadFile(local)
	srv.sameObject(t, "remote", want)

	// truncate(1) to a smaller and a larger size.
	run(t, "truncate", "-s", "1000", m.path("remote"))
	srv.sameObject(t, "remote", want[:1000])
	run(t, "truncate", "-s", "5000", m.path("remote"))
	srv.sameObject(t, "remote", append(append([]byte{}, want[:1000]...), make([]byte, 4000)...))
}

func TestLargeDirectoryAndRmdir(t *testing.T) {
	srv := startServer(t)
	for i := 0; i < 5000; i++ {
		srv.putByOther(t, fmt.Sprintf("big/f%05d", i), []byte("x"))
	}
	m := startMount(t, srv)
	entries, err := os.ReadDir(m.path("big"))
	if err != nil || len(entries) != 5000 {
		t.Fatalf("listed %d entries, want 5000 (%v)", len(entries), err)
	}
	if err := syscall.Rmdir(m.path("big")); err != syscall.ENOTEMPTY {
		t.Fatalf("rmdir of a non-empty directory: %v, want ENOTEMPTY", err)
	}
	os.Mkdir(m.path("empty"), 0o755)
	if err := syscall.Rmdir(m.path("empty")); err != nil {
		t.Fatalf("rmdir: %v", err)
	}
	if srv.exists("empty/") {
		t.Fatal("marker left after rmdir")
	}
}

func TestLinksAndRenameFlags(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "dir_rename_limit=3")
	writeFile(t, m.path("target.txt"), []byte("pointed at"))
	if err := os.Symlink("target.txt", m.path("link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(m.path("target.txt"), m.path("hard")); errnoOf(err) != syscall.ENOTSUP {
		t.Fatalf("hard link: %v, want ENOTSUP", err)
	}
	writeFile(t, m.path("other.txt"), []byte("other"))
	if err := unix.Renameat2(unix.AT_FDCWD, m.path("other.txt"), unix.AT_FDCWD, m.path("target.txt"), unix.RENAME_NOREPLACE); err != unix.EEXIST {
		t.Fatalf("RENAME_NOREPLACE over a file: %v", err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, m.path("other.txt"), unix.AT_FDCWD, m.path("target.txt"), unix.RENAME_EXCHANGE); err != unix.EINVAL {
		t.Fatalf("RENAME_EXCHANGE: %v", err)
	}
	for i := 0; i < 5; i++ {
		writeFile(t, m.path(fmt.Sprintf("many/f%d", i)), []byte("x"))
	}
	if err := os.Rename(m.path("many"), m.path("many2")); errnoOf(err) != syscall.EXDEV {
		t.Fatalf("rename over dir_rename_limit: %v, want EXDEV", err)
	}
	run(t, "mv", m.path("many"), m.path("many3")) // mv copies instead
	if !srv.exists("many3/f4") || srv.exists("many/f4") {
		t.Fatalf("mv fallback: %v", srv.keys(t))
	}

	m.stop(t)
	m = startMount(t, srv)
	if target, err := os.Readlink(m.path("link")); err != nil || target != "target.txt" {
		t.Fatalf("readlink after remount: %q %v", target, err)
	}
	if data, err := os.ReadFile(m.path("link")); err != nil || string(data) != "pointed at" {
		t.Fatalf("read through the link: %q %v", data, err)
	}
	if o, _ := srv.store.Head(testBucket, "link"); o.Meta["mode"] != strconv.Itoa(syscall.S_IFLNK|0o777) {
		t.Fatalf("link mode %v", o.Meta)
	}
}

// Implicit directories (keys with a shared prefix and no marker) and files
// written by other clients show up.
func TestObjectsFromOtherClients(t *testing.T) {
	srv := startServer(t)
	srv.putByOther(t, "implicit/deeper/file.txt", []byte("from elsewhere"))
	m := startMount(t, srv, "uid=1234", "gid=99", "umask=027")
	if !m.logged("without allow_other only the mounting user may enter the mount") {
		t.Error("no warning that uid 1234 cannot enter the mount without allow_other")
	}
	fi, err := os.Stat(m.path("implicit/deeper/file.txt"))
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o640 || st.Uid != 1234 || st.Gid != 99 {
		t.Fatalf("defaults for an object without metadata: %v uid %d gid %d", fi.Mode(), st.Uid, st.Gid)
	}
	if fi, err := os.Stat(m.path("implicit")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o750 {
		t.Fatalf("implicit directory: %v %v", fi, err)
	}
	out := run(t, "cat", m.path("implicit/deeper/file.txt"))
	if out != "from elsewhere" {
		t.Fatalf("cat: %q", out)
	}
	if err := exec.Command("ls", "-R", m.path("")).Run(); err != nil {
		t.Fatal(err)
	}
}

// A directory lists "." and ".." with the inodes stat gives (programs
// count on them), the root's inode is not 0, a directory's link count is
// 1 whichever request asked, and a directory without a
// marker — the root, one other clients' objects imply — dates from the
// mount, not from the year 1: tar called that "implausibly old", and
// rsync and tar made it 1901 on ext4.
func TestDirectoryDotsAndTimes(t *testing.T) {
	srv := startServer(t)
	srv.putByOther(t, "implicit/deeper/file.txt", []byte("from elsewhere"))
	// Legal keys that name nothing a path reaches: not listed (they were,
	// as a second "." and ".." and an empty name).
	for _, k := range []string{"implicit/../escape", "implicit/./dot", "implicit//double", "implicit/.", "implicit/..", "hidden//x"} {
		srv.putByOther(t, k, []byte("unreachable"))
	}
	before := time.Now().Add(-time.Second)
	m := startMount(t, srv)
	after := time.Now().Add(time.Second)
	inode := func(rel string) uint64 {
		fi, err := os.Stat(m.path(rel))
		if err != nil {
			t.Fatal(err)
		}
		if mt := fi.ModTime(); mt.Before(before) || mt.After(after) {
			t.Errorf("%q: mtime %v, want the mount's start", rel, mt)
		}
		// 1, "count unknown" to fts: 2 says "no subdirectories" (it
		// was 2 from getattr, 1 from lookup).
		if n := fi.Sys().(*syscall.Stat_t).Nlink; n != 1 {
			t.Errorf("%q: %d links, want 1", rel, n)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	if ino := inode(""); ino != 1 {
		t.Errorf("the root's inode is %d, want 1", ino)
	}
	for _, dir := range []string{"", "implicit", "implicit/deeper"} {
		listed := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(run(t, "ls", "-ai1", m.path(dir))), "\n") {
			ino, name, _ := strings.Cut(strings.TrimSpace(line), " ")
			listed[name] = ino
		}
		parent := filepath.Dir(dir)
		if dir == "" {
			parent = "" // the mount's own "..": the kernel's to answer
		}
		if want := fmt.Sprint(inode(dir)); listed["."] != want {
			t.Errorf("%q lists . as %q, want %s (%v)", dir, listed["."], want, listed)
		}
		if want := fmt.Sprint(inode(strings.TrimPrefix(parent, "."))); dir != "" && listed[".."] != want {
			t.Errorf("%q lists .. as %q, want %s (%v)", dir, listed[".."], want, listed)
		}
	}
	if got := strings.Fields(run(t, "ls", "-a", m.path("implicit"))); !slices.Equal(got, []string{".", "..", "deeper"}) {
		t.Errorf("implicit lists %q", got)
	}
	// A directory holding only such keys lists empty but is not, and
	// rmdir says why in the log.
	if err := syscall.Rmdir(m.path("hidden")); err != syscall.ENOTEMPTY {
		t.Errorf("rmdir of a directory holding only hidden//x: %v, want ENOTEMPTY", err)
	}
	waitUntil(t, "rmdir's log line naming the key no path reaches", func() bool {
		return strings.Contains(m.logs.String(), `holds keys no path reaches" key=hidden/ example=hidden//x`)
	})
	archive := filepath.Join(t.TempDir(), "a.tar")
	run(t, "tar", "-C", m.path(""), "-cf", archive, "implicit")
	if out := run(t, "tar", "-C", t.TempDir(), "-xf", archive); out != "" {
		t.Errorf("tar -x of a tree with an implicit directory: %s", out)
	}
}

// DESIGN §5: the mount's own changes show at once; other clients' after
// the stat TTL.
func TestStatTTL(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "stat_ttl=300ms")
	if _, err := os.ReadDir(m.path("")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, m.path("mine.txt"), []byte("at once"))
	if data, err := os.ReadFile(m.path("mine.txt")); err != nil || string(data) != "at once" {
		t.Fatalf("own write: %q %v", data, err)
	}
	if _, err := os.Stat(m.path("theirs.txt")); !os.IsNotExist(err) {
		t.Fatalf("stat before: %v", err)
	}
	srv.putByOther(t, "theirs.txt", []byte("from another client"))
	waitUntil(t, "another client's object to show", func() bool {
		_, err := os.Stat(m.path("theirs.txt"))
		return err == nil
	})
	if data, err := os.ReadFile(m.path("theirs.txt")); err != nil || string(data) != "from another client" {
		t.Fatalf("their object: %q %v", data, err)
	}
}

// DESIGN §5: unlink drops staged data and pending work.
func TestUnlinkOpenFile(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	f, err := os.Create(m.path("doomed.txt"))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("never uploaded")
	if err := os.Remove(m.path("doomed.txt")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close of an unlinked file: %v", err)
	}
	if srv.exists("doomed.txt") || srv.Count("PutObject") != 0 {
		t.Fatalf("unlinked file was uploaded: %v", srv.keys(t))
	}
	// A chmod held for an uploaded file is dropped by unlink too.
	writeFile(t, m.path("held.txt"), []byte("x"))
	os.Chmod(m.path("held.txt"), 0o600)
	os.Remove(m.path("held.txt"))
	m.stop(t) // applies whatever is still held
	if srv.exists("held.txt") {
		t.Fatal("held metadata recreated an unlinked file")
	}
}

// A write through a write-only descriptor (direct I/O, no page cache) is
// seen by a reader that has the file cached, and the reverse.
func TestWriteOnlyAndCachedReaderAgree(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	writeFile(t, m.path("f"), []byte("aaaaaaaa"))
	rw, err := os.OpenFile(m.path("f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	readAt := func(want string) {
		t.Helper()
		buf := make([]byte, 16)
		n, _ := rw.ReadAt(buf, 0)
		if string(buf[:n]) != want {
			t.Fatalf("read %q, want %q", buf[:n], want)
		}
	}
	readAt("aaaaaaaa") // now in the page cache
	wo, err := os.OpenFile(m.path("f"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	wo.WriteAt([]byte("bb"), 2)
	readAt("aabbaaaa")
	rw.WriteAt([]byte("c"), 0)
	if err := wo.Close(); err != nil {
		t.Fatal(err)
	}
	readAt("cabbaaaa")
	if err := rw.Sync(); err != nil {
		t.Fatal(err)
	}
	srv.sameObject(t, "f", []byte("cabbaaaa"))
}

// A chmod held for a moment (to ride along with a rename) still reaches
// the object when the kernel forgets the node meanwhile: the node is out
// of the tree then and has no path of its own.
func TestHeldChmodSurvivesForget(t *testing.T) {
	srv := startServer(t)
	srv.putByOther(t, "dir/f.txt", []byte("content"))
	srv.putByOther(t, "dir/", []byte(""))
	m := startMount(t, srv)
	if err := os.Chmod(m.path("dir/f.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(m.path("dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := forgetUnusedNodes(); err != nil {
		t.Fatal(err)
	}
	m.stop(t) // applies whatever is still held
	for key, want := range map[string]int{"dir/f.txt": syscall.S_IFREG | 0o600, "dir/": syscall.S_IFDIR | 0o700} {
		if o, err := srv.store.Head(testBucket, key); err != nil || o.Meta["mode"] != strconv.Itoa(want) {
			t.Errorf("%s: metadata %v %v, want mode %o", key, o.Meta, err, want)
		}
	}
	srv.sameObject(t, "dir/f.txt", []byte("content"))
}

// A chmod held for a moment (sent with one copy after about a second)
// survives a lookup that reads the bucket's older view of the file in the
// meantime.
func TestChmodSurvivesLookupWhileHeld(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "stat_ttl=0s")
	writeFile(t, m.path("f"), []byte("content"))
	if err := os.Chmod(m.path("f"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadDir(m.path("")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(m.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %o after a lookup, want 600", fi.Mode().Perm())
	}
	m.stop(t)
	if o, _ := srv.store.Head(testBucket, "f"); o.Meta["mode"] != fmt.Sprint(syscall.S_IFREG|0o600) {
		t.Fatalf("object's mode %v, want %o", o.Meta["mode"], syscall.S_IFREG|0o600)
	}
}

// A chmod held for its copy belongs to the file, not to the node the
// kernel had for it: when the kernel forgets the node (here: dropped
// caches), the next lookup's node shows the change and takes it over, and
// a later chmod is not overwritten by the forgotten node's copy.
func TestChmodSurvivesForgottenNode(t *testing.T) {
	for _, name := range []string{"f", "dir"} {
		t.Run(name, func(t *testing.T) {
			srv := startServer(t)
			m := startMount(t, srv)
			if name == "dir" {
				if err := os.Mkdir(m.path(name), 0o755); err != nil {
					t.Fatal(err)
				}
			} else {
				writeFile(t, m.path(name), []byte("content"))
			}
			if err := os.Chmod(m.path(name), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := forgetUnusedNodes(); err != nil {
				t.Fatalf("dropping the kernel's caches: %v", err)
			}
			fi, err := os.Stat(m.path(name))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o700 {
				t.Errorf("mode %o after the node was forgotten, want 700", fi.Mode().Perm())
			}
			if err := os.Chmod(m.path(name), 0o750); err != nil {
				t.Fatal(err)
			}
			m.stop(t)
			key, typ := name, uint32(syscall.S_IFREG)
			if name == "dir" {
				key, typ = name+"/", syscall.S_IFDIR
			}
			if o, _ := srv.store.Head(testBucket, key); o.Meta["mode"] != fmt.Sprint(typ|0o750) {
				t.Fatalf("object's mode %v, want %d", o.Meta["mode"], typ|0o750)
			}
		})
	}
}

// A file the kernel forgets while its chmod's copy is on its way to the
// bucket is still the mount's node: a lookup meanwhile shows the new mode,
// not the one the bucket has until the copy lands (fs/forgotten.go).
func TestChmodInFlightSurvivesForgottenNode(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "stat_ttl=0s")
	writeFile(t, m.path("f"), []byte("content"))
	copying, land := make(chan struct{}), make(chan struct{})
	srv.AddFault(osslocal.Fault{Op: "CopyObject", Count: 1, Before: func() { close(copying); <-land }})
	if err := os.Chmod(m.path("f"), 0o600); err != nil {
		t.Fatal(err)
	}
	<-copying
	if err := forgetUnusedNodes(); err != nil {
		t.Fatal(err)
	}
	if !m.logged("the kernel forgot a file not uploaded yet; kept in the tree") {
		t.Fatal("the kernel's forgetting of the file was not seen")
	}
	fi, err := os.Stat(m.path("f"))
	close(land)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stat while the chmod's copy is on its way: %v %v, want mode 600", fi, err)
	}
	m.stop(t)
	if o, _ := srv.store.Head(testBucket, "f"); o.Meta["mode"] != fmt.Sprint(syscall.S_IFREG|0o600) {
		t.Fatalf("object's mode %v, want %o", o.Meta["mode"], syscall.S_IFREG|0o600)
	}
	srv.sameObject(t, "f", []byte("content"))
}

// A chmod held on a file whose directory is then renamed, and whose node
// the kernel forgets, follows the file to its new name: it does not land
// on a new file made under the old name.
func TestHeldChmodFollowsDirectoryRename(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	if err := os.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, m.path("d/f"), []byte("moved"))
	if err := os.Chmod(m.path("d/f"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.path("d"), m.path("g")); err != nil {
		t.Fatal(err)
	}
	if err := forgetUnusedNodes(); err != nil {
		t.Fatalf("dropping the kernel's caches: %v", err)
	}
	if err := os.Mkdir(m.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, m.path("d/f"), []byte("new"))
	for name, want := range map[string]os.FileMode{"g/f": 0o700, "d/f": 0o644} {
		if fi, err := os.Stat(m.path(name)); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want mode %o", name, fi.Mode(), err, want)
		}
	}
	m.stop(t)
	for key, want := range map[string]int{"g/f": syscall.S_IFREG | 0o700, "d/f": syscall.S_IFREG | 0o644} {
		if o, err := srv.store.Head(testBucket, key); err != nil || o.Meta["mode"] != strconv.Itoa(want) {
			t.Errorf("%s: metadata %v %v, want mode %o", key, o.Meta, err, want)
		}
	}
}

// A chmod after one whose copy failed is still sent: the failed change
// stays pending, which must not keep the next from being scheduled.
func TestChmodAfterAFailedOne(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	writeFile(t, m.path("f"), []byte("content"))
	srv.AddFault(osslocal.Fault{Op: "CopyObject", Status: 403})
	if err := os.Chmod(m.path("f"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the held copy to fail", func() bool {
		return strings.Contains(m.logs.String(), `msg="metadata change not saved; trying again" key=f`)
	})
	srv.ClearFaults()
	if err := os.Chmod(m.path("f"), 0o640); err != nil {
		t.Fatal(err)
	}
	m.stop(t)
	if o, _ := srv.store.Head(testBucket, "f"); o.Meta["mode"] != fmt.Sprint(syscall.S_IFREG|0o640) {
		t.Fatalf("object's mode %v, want %o", o.Meta["mode"], syscall.S_IFREG|0o640)
	}
}

// A held chmod whose copy the server fails (all the SDK's attempts) is
// tried again: chmod returned when the change was held, so the object
// must end with the new mode. It stayed pending until the next change of
// the file, and an unmount before that lost it.
func TestFailedHeldChmodIsTriedAgain(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	writeFile(t, m.path("f"), []byte("content"))
	srv.AddFault(osslocal.Fault{Op: "CopyObject", Status: 503, Count: 3})
	if err := os.Chmod(m.path("f"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the held change to fail", func() bool {
		return strings.Contains(m.logs.String(), `msg="metadata change not saved`)
	})
	m.stop(t)
	if o, _ := srv.store.Head(testBucket, "f"); o.Meta["mode"] != fmt.Sprint(syscall.S_IFREG|0o600) {
		t.Fatalf("object's mode %v, want %o", o.Meta["mode"], syscall.S_IFREG|0o600)
	}
}

// A file unlinked while a program has it open for reading, and never
// staged here, has no content left: reading it, or opening it again
// through /proc without a lookup, fails with ESTALE (the kernel's answer
// for a file removed behind a handle), not with an I/O error on a key the
// file no longer has.
func TestOpenFileUnlinkedBehindAHandle(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	// Put by another client, so that the mount has no staged copy.
	srv.putByOther(t, "f", []byte("content"))
	f, err := os.Open(m.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(m.path("f")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Read(make([]byte, 10)); errnoOf(err) != syscall.ESTALE {
		t.Errorf("read: %v, want ESTALE", err)
	}
	again, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), os.O_RDWR, 0)
	if errnoOf(err) != syscall.ESTALE {
		t.Errorf("reopen: %v, want ESTALE", err)
	}
	if err == nil {
		again.Close()
	}
	if keys := srv.keys(t); len(keys) != 0 {
		t.Errorf("keys %v", keys)
	}
	if strings.Contains(m.logs.String(), "level=WARN") {
		t.Errorf("warnings logged:\n%s", m.logs)
	}
}

// `ls -l` right after a copy asks the bucket nothing: READDIRPLUS looks
// every entry up, and the mount knows the files and directories it has
// just made.
func TestListingAfterCopyAsksNoHead(t *testing.T) {
	for _, mode := range bothModes {
		t.Run(mode.name, func(t *testing.T) {
			srv := startServer(t)
			m := startMount(t, srv, mode.opts...)
			src := smallTree(t, 50)
			run(t, "cp", "-r", src, m.path("many"))
			for _, sub := range []string{"a", "b", "c"} {
				if err := os.Mkdir(m.path("many/"+sub), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if mode.name == "writeback" {
				run(t, "sync", m.path("many")) // every upload done
			}
			heads, lists := srv.Count("HeadObject"), srv.Count("ListObjectsV2")
			out := run(t, "ls", "-l", m.path("many"))
			if lines := strings.Count(out, "\n"); lines != 54 { // "total", the files and directories
				t.Fatalf("ls -l printed %d lines:\n%s", lines, out)
			}
			if n := srv.Count("HeadObject") - heads; n != 0 {
				t.Errorf("ls -l after the copy sent %d HEAD requests", n)
			}
			// The directory's own listing (readdir) only.
			if n := srv.Count("ListObjectsV2") - lists; n > 1 {
				t.Errorf("ls -l after the copy sent %d listings", n)
			}
		})
	}
}

// find walks a bucket's tree without a HEAD of any object larger than a
// symbolic link's target can be: readdir says those are regular files. A
// smaller one may be a link or a FIFO (their objects look like files in a
// listing), and is looked up.
func TestFindStatsOnlySmallObjects(t *testing.T) {
	srv, heads := startServerCountingHeads(t)
	put := func(key string, size int, mode uint32) {
		t.Helper()
		data := bytes.Repeat([]byte("x"), size)
		if mode&syscall.S_IFMT == syscall.S_IFLNK {
			data = []byte("big")
		}
		meta := map[string]string{"mode": strconv.Itoa(int(mode))}
		if _, err := srv.store.Put(testBucket, key, bytes.NewReader(data), store.Attrs{Meta: meta}, false); err != nil {
			t.Fatal(err)
		}
	}
	put("tree/big", 8<<10, syscall.S_IFREG|0o644)
	put("tree/page", 4096, syscall.S_IFREG|0o644)
	put("tree/edge", 4095, syscall.S_IFREG|0o644)
	put("tree/small", 10, syscall.S_IFREG|0o644)
	put("tree/link", 0, syscall.S_IFLNK|0o777)
	put("tree/fifo", 0, syscall.S_IFIFO|0o644)
	put("tree/sub/deep", 1<<20, syscall.S_IFREG|0o644)
	m := startMount(t, srv)
	find := func(typ string) string {
		out := strings.Fields(run(t, "find", m.path("tree"), "-type", typ, "-printf", "%P\n"))
		sort.Strings(out)
		return strings.Join(out, " ")
	}
	if got, want := find("f"), "big edge page small sub/deep"; got != want {
		t.Errorf("find -type f: %s, want %s", got, want)
	}
	headed := heads()
	for _, key := range []string{"tree/big", "tree/page", "tree/sub/deep"} {
		if headed[key] > 0 {
			t.Errorf("find sent a HEAD of %s", key)
		}
	}
	for _, key := range []string{"tree/edge", "tree/small", "tree/link", "tree/fifo"} {
		if headed[key] == 0 {
			t.Errorf("find took %s for what readdir said without a HEAD", key)
		}
	}
	if got := find("l"); got != "link" {
		t.Errorf("find -type l: %s", got)
	}
	if got := find("p"); got != "fifo" {
		t.Errorf("find -type p: %s", got)
	}
}

// ls -l of large objects, which readdir lists as regular files, still
// asks ahead for their HEADs once it looks one up, though the scan began
// at a small object (find would not look the large ones up).
func TestListingOfLargeObjectsAsksInParallel(t *testing.T) {
	gate := newHeadGate("/large/", false, 8)
	gate.on.Store(true)
	srv := startServerWith(t, store.NewMemory(), gate.wrap)
	srv.putByOther(t, "large/a", []byte("small, of unknown type"))
	for i := range 40 {
		srv.putByOther(t, fmt.Sprintf("large/b%03d", i), make([]byte, 8<<10))
	}
	m := startMount(t, srv)
	out := run(t, "ls", "-l", m.path("large"))
	if n := strings.Count(out, " 8192 "); n != 40 {
		t.Errorf("ls -l shows %d files of 8 KiB:\n%s", n, out)
	}
	if files, _ := gate.mostWaiting(); files < 8 {
		t.Errorf("at most %d HEADs were under way at once", files)
	}
}

// fallocate(2) mode 0 (posix_fallocate, `fallocate -l`) makes a file at
// least that long, as on a local disk: zeros past the old end, nothing
// within it changed. KEEP_SIZE changes nothing in the bucket; rsync
// --preallocate (which uses it) copies byte for byte without a complaint.
// Modes the bucket cannot mean (punch a hole, zero a range) are EOPNOTSUPP.
func TestFallocate(t *testing.T) {
	for _, mode := range bothModes {
		t.Run(mode.name, func(t *testing.T) {
			srv := startServer(t)
			m := startMount(t, srv, mode.opts...)
			uploaded := func(name string) {
				if mode.name == "writeback" {
					run(t, "sync", m.path(name)) // waits for the file's upload
				}
			}
			run(t, "fallocate", "-l", "1MiB", m.path("new"))
			uploaded("new")
			srv.sameObject(t, "new", make([]byte, 1<<20))

			data := randomBytes(t, 1000)
			writeFile(t, m.path("grown"), data)
			run(t, "fallocate", "-o", "500", "-l", "2000", m.path("grown"))
			uploaded("grown")
			srv.sameObject(t, "grown", append(append([]byte{}, data...), make([]byte, 1500)...))
			puts := srv.Count("PutObject")
			run(t, "fallocate", "-l", "2000", m.path("grown")) // within the file: nothing to do

			f, err := os.OpenFile(m.path("grown"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, 1<<20); err != nil {
				t.Errorf("fallocate KEEP_SIZE: %v", err)
			}
			for _, flags := range []uint32{unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_ZERO_RANGE} {
				if err := unix.Fallocate(int(f.Fd()), flags, 0, 4096); err != unix.EOPNOTSUPP {
					t.Errorf("fallocate mode %#x: %v, want EOPNOTSUPP", flags, err)
				}
			}
			if fi, err := f.Stat(); err != nil || fi.Size() != 2500 {
				t.Errorf("after fallocate KEEP_SIZE: %v, %v; want 2500 bytes", fi, err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			uploaded("grown")
			if n := srv.Count("PutObject") - puts; n != 0 {
				t.Errorf("fallocate within the file and with KEEP_SIZE sent %d PUTs", n)
			}
			srv.sameObject(t, "grown", append(append([]byte{}, data...), make([]byte, 1500)...))

			src := t.TempDir()
			big := randomBytes(t, 3<<20+7)
			writeFile(t, filepath.Join(src, "big"), big)
			writeFile(t, filepath.Join(src, "small"), data)
			out := run(t, "rsync", "-a", "--preallocate", src+"/", m.path("copied"))
			if strings.Contains(out, "fallocate") {
				t.Errorf("rsync --preallocate: %s", out)
			}
			uploaded("copied")
			srv.sameObject(t, "copied/big", big)
			srv.sameObject(t, "copied/small", data)
		})
	}
}

// ls -l of objects and directories the mount knows nothing about
// (another client wrote them) looks every one up: a HEAD for a file, a
// listing and the marker's HEAD for a directory. They go out 16 at a time,
// not one after the other — the server lets HEADs through only once eight
// are waiting together (headGate). Every entry shows its own size and mode, and few
// requests are spent beyond those.
func TestListingOfOthersObjectsAsksInParallel(t *testing.T) {
	const files, dirs, together = 100, 40, 8
	gate := newHeadGate("/others/", true, together)
	gate.on.Store(true)
	srv := startServerWith(t, store.NewMemory(), gate.wrap)
	put := func(key string, size int, mode uint32) {
		t.Helper()
		meta := map[string]string{"mode": strconv.Itoa(int(mode))}
		if _, err := srv.store.Put(testBucket, key, bytes.NewReader(make([]byte, size)), store.Attrs{Meta: meta}, false); err != nil {
			t.Fatal(err)
		}
	}
	modes := []string{"-rw-------", "-rw-r-----", "drwx------", "drwxr-x---"}
	for i := range files {
		// The first half small, whose type readdir does not know; the
		// rest larger than a link can be, listed as regular files.
		put(fmt.Sprintf("others/f%03d", i), i*83, syscall.S_IFREG|0o600+uint32(i%2)*0o40)
	}
	for i := range dirs {
		put(fmt.Sprintf("others/g%03d/", i), 0, syscall.S_IFDIR|0o700+uint32(i%2)*0o50)
		put(fmt.Sprintf("others/g%03d/inside", i), 1, syscall.S_IFREG|0o600)
	}
	m := startMount(t, srv, "stat_ttl=1m") // the second ls -l below comes within it
	before := srv.Counts()
	out := run(t, "ls", "-ln", m.path("others"))
	lines := strings.Split(strings.TrimSpace(out), "\n")[1:] // after "total"
	if len(lines) != files+dirs {
		t.Fatalf("ls -l printed %d entries:\n%s", len(lines), out)
	}
	for i, line := range lines {
		f := strings.Fields(line)
		want, size, name := modes[i%2], strconv.Itoa(i*83), fmt.Sprintf("f%03d", i)
		if i >= files {
			want, size, name = modes[2+(i-files)%2], f[4], fmt.Sprintf("g%03d", i-files)
		}
		if f[0] != want || f[4] != size || f[len(f)-1] != name {
			t.Errorf("entry %d: %q, want %s, mode %s, size %s", i, line, name, want, size)
		}
	}
	if fileHeads, markerHeads := gate.mostWaiting(); fileHeads < together || markerHeads < together {
		t.Errorf("at most %d HEADs of files and %d of directory markers were under way at once", fileHeads, markerHeads)
	}
	after := srv.Counts()
	if n := after["HeadObject"] - before["HeadObject"]; n < files+dirs || n > files+dirs+20 {
		t.Errorf("%d HEADs for %d files and %d directories", n, files, dirs)
	}
	// The directory's own listing says its subdirectories exist: each is
	// asked about with its marker's HEAD alone (it was a one-key listing
	// first, two requests in a row).
	if n := after["ListObjectsV2"] - before["ListObjectsV2"]; n > 2 {
		t.Errorf("%d listings for a directory of %d directories, want 1", n, dirs)
	}
	// Within stat_ttl, what was just looked up and listed is known: the
	// second ls -l asks nothing (it listed again before
	// TestDirectoryReadAgainAsksNothing's change).
	if again := run(t, "ls", "-ln", m.path("others")); again != out {
		t.Errorf("ls -l again:\n%s\nfirst:\n%s", again, out)
	}
	if got := requestsSince(after, srv.Counts()); got != "0 requests ()" {
		t.Errorf("ls -l again sent %s", got)
	}
}

// A walk that stats every entry in name order (Go's filepath.Walk,
// Python's sorted os.walk) and rsync's second run, which stats a
// directory's files first and its subdirectories after, both find the
// files' HEADs asked ahead, past directories in between. The bucket lists
// a page's objects before its prefixes, and the scan followed that order:
// two directories in a row lost its place, and every HEAD after them went
// out alone. A directory such a walk finds is listed at the first lookup
// in it. Each HEAD takes 20 ms here, so that those asked ahead overlap.
func TestWalksInNameOrderAskAhead(t *testing.T) {
	var inFlight, most, markerHeads atomic.Int32
	var subdirListed, headBeforeListing atomic.Bool
	slow := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if q := r.URL.Query(); r.Method == http.MethodGet && q.Get("prefix") == "walk/f005d/" && q.Get("delimiter") == "/" {
				subdirListed.Store(true)
			}
			if r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/walk/f005d/") && !strings.HasSuffix(r.URL.Path, "/") && !subdirListed.Load() {
				headBeforeListing.Store(true)
			}
			if r.Method == http.MethodHead && (strings.HasSuffix(r.URL.Path, "/f005d/") || strings.HasSuffix(r.URL.Path, "/f005e/")) {
				markerHeads.Add(1)
			}
			// The files after the directories: walk/f020 to f059.
			if r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/walk/f0") && r.URL.Path >= "/"+testBucket+"/walk/f020" {
				n := inFlight.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(20 * time.Millisecond)
				inFlight.Add(-1)
			}
			h.ServeHTTP(w, r)
		})
	}
	srv := startServerWith(t, store.NewMemory(), slow)
	src := t.TempDir()
	var want []string
	for i := range 60 {
		name := fmt.Sprintf("f%03d", i)
		writeFile(t, filepath.Join(src, name), randomBytes(t, 8<<10))
		want = append(want, name)
		if i == 5 {
			for _, dir := range []string{"f005d", "f005e"} {
				want = append(want, dir)
				for _, name := range []string{"a", "b", "inside"} {
					writeFile(t, filepath.Join(src, dir, name), []byte(dir+name))
					want = append(want, dir+"/"+name)
				}
			}
		}
	}
	m := startMount(t, srv, "stat_ttl=1m")
	run(t, "rsync", "-a", src+"/", m.path("walk"))
	m.stop(t)

	m = startMount(t, srv, "stat_ttl=1m")
	var walked []string
	if err := filepath.Walk(m.path("walk"), func(path string, _ os.FileInfo, err error) error {
		if rel, _ := filepath.Rel(m.path("walk"), path); rel != "." {
			walked = append(walked, rel)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(walked, want) {
		t.Fatalf("the walk found %q, want %q", walked, want)
	}
	if n := most.Swap(0); n < 4 {
		t.Errorf("a walk in name order: at most %d HEADs of the files after two directories were under way at once", n)
	}
	m.stop(t)

	m = startMount(t, srv, "stat_ttl=1m")
	markerHeads.Store(0)
	subdirListed.Store(false)
	if out := run(t, "rsync", "-a", "--stats", src+"/", m.path("walk")); !strings.Contains(out, "Number of regular files transferred: 0") {
		t.Errorf("rsync again sent files:\n%s", out)
	}
	if n := most.Load(); n < 4 {
		t.Errorf("rsync again: at most %d HEADs of the files after two directories were under way at once", n)
	}
	// The directories were asked about ahead, while rsync passed over
	// them: those answers wait for it to come back, not asked again.
	if n := markerHeads.Load(); n != 2 {
		t.Errorf("rsync again sent %d HEADs of the two directories' markers, want 2", n)
	}
	// Found by a walk of its parent, a directory is listed at the first
	// lookup in it, not the second: the walk stats what it holds.
	if !subdirListed.Load() || headBeforeListing.Load() {
		t.Errorf("rsync again: f005d listed %v, a HEAD of a file in it before its listing %v", subdirListed.Load(), headBeforeListing.Load())
	}
}

// A directory found by a walk of its parent is listed at the first lookup
// in it — but a page of it, not up to ten: a lookup of one name in a large
// directory does not wait for all of it.
func TestFirstLookupInAWalkedDirectoryListsOnePage(t *testing.T) {
	var pages atomic.Int32
	srv := startServerWith(t, store.NewMemory(), func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if q := r.URL.Query(); r.Method == http.MethodGet && q.Get("prefix") == "big/" && q.Get("delimiter") == "/" {
				pages.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	})
	srv.putByOther(t, "a", []byte("before big, so that ls -l asks about big ahead"))
	for i := range 2500 {
		srv.putByOther(t, fmt.Sprintf("big/f%04d", i), []byte("x"))
	}
	m := startMount(t, srv, "stat_ttl=1m")
	if out := run(t, "ls", "-l", m.path("")); !strings.Contains(out, " big\n") {
		t.Fatalf("ls -l of the root:\n%s", out)
	}
	if data, err := os.ReadFile(m.path("big/f1234")); err != nil || string(data) != "x" {
		t.Fatalf("big/f1234: %q, %v", data, err)
	}
	if n := pages.Load(); n != 1 {
		t.Errorf("a lookup in a directory of 2,500 objects found by a walk listed %d pages of it, want 1", n)
	}
}

// rm -r of objects the mount knows nothing about looks each up before it
// unlinks it, and the lookups are asked ahead as ls -l's are. An unlink
// changes the directory, but not the names asked about: their answers
// stand, and no object is asked about twice (each unlink voided every
// answer asked ahead: the lookups after it asked again, one at a time).
func TestRemovingOthersObjectsAsksEachOnce(t *testing.T) {
	const files = 100
	srv, heads := startServerCountingHeads(t)
	for i := range files {
		srv.putByOther(t, fmt.Sprintf("others/f%03d", i), []byte("x"))
	}
	m := startMount(t, srv, "stat_ttl=1m")
	before := srv.Counts()
	run(t, "rm", "-r", m.path("others"))
	if keys := srv.keys(t); len(keys) != 0 {
		t.Fatalf("after rm -r: %v", keys)
	}
	if got := srv.Counts()["DeleteObject"] - before["DeleteObject"]; got != files+1 {
		t.Errorf("%d DELETEs for %d files and rmdir's of the marker", got, files)
	}
	var twice []string
	for key, n := range heads() {
		if strings.HasPrefix(key, "others/f") && n > 1 {
			twice = append(twice, fmt.Sprintf("%s (%d)", key, n))
		}
	}
	if len(twice) > 0 {
		sort.Strings(twice)
		t.Errorf("objects asked about more than once: %v", twice)
	}
}

// A plain ls (and a shell glob, tab completion) of objects the mount
// knows nothing about costs one listing: the kernel's READDIRPLUS gets
// names and types, no attributes it would have to HEAD every object for.
// Listed objects are of unknown type (a file, symlink or FIFO looks the
// same in a listing), so find stats them and finds the symlink and FIFO,
// and ls -l shows each as it is.
func TestPlainListingAsksNoHead(t *testing.T) {
	srv := startServer(t)
	put := func(key, body string, mode uint32) {
		t.Helper()
		meta := map[string]string{"mode": strconv.Itoa(int(mode))}
		if _, err := srv.store.Put(testBucket, key, strings.NewReader(body), store.Attrs{Meta: meta}, false); err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	for i := range 60 {
		name := fmt.Sprintf("f%02d", i)
		put("others/"+name, name, syscall.S_IFREG|0o640)
		want = append(want, name)
	}
	put("others/link", "f00", syscall.S_IFLNK|0o777)
	put("others/pipe", "", syscall.S_IFIFO|0o600)
	put("others/sub/", "", syscall.S_IFDIR|0o750)
	want = append(want, "link", "pipe", "sub")
	slices.Sort(want)

	m := startMount(t, srv)
	run(t, "stat", m.path("others")) // its own lookup asks
	before := srv.Counts()
	if got := strings.Fields(run(t, "ls", "--color=never", m.path("others"))); !slices.Equal(got, want) {
		t.Errorf("ls printed %q, want %q", got, want)
	}
	if got := requestsSince(before, srv.Counts()); got != "1 requests (ListObjectsV2=1)" {
		t.Errorf("a plain ls sent %s", got)
	}
	for typ, name := range map[string]string{"l": "link", "p": "pipe", "d": "sub"} {
		if got := strings.TrimSpace(run(t, "find", m.path("others"), "-mindepth", "1", "-type", typ)); got != m.path("others/"+name) {
			t.Errorf("find -type %s found %q, want %s", typ, got, m.path("others/"+name))
		}
	}
	if got := run(t, "stat", "-c", "%A %s", m.path("others/link"), m.path("others/pipe"), m.path("others/f01")); got != "lrwxrwxrwx 3\nprw------- 0\n-rw-r----- 3\n" {
		t.Errorf("stat shows\n%s", got)
	}
}

// A directory read again within stat_ttl of its listing, with nothing
// changed in it by this mount since, is read from that listing: each
// readdir listed it again (git status reads every directory whose entries
// its lstats had just listed on demand). A change by this mount lists it
// again; another client's shows after stat_ttl, as for lookups.
func TestDirectoryReadAgainAsksNothing(t *testing.T) {
	srv := startServer(t)
	for i := range 5 {
		srv.putByOther(t, fmt.Sprintf("d/f%d", i), []byte("x"))
	}
	m := startMount(t, srv, "stat_ttl=1h")
	ls := func() string {
		t.Helper()
		return strings.Join(strings.Fields(run(t, "ls", m.path("d"))), " ")
	}
	ls()
	before := srv.Counts()
	if got := ls(); got != "f0 f1 f2 f3 f4" {
		t.Errorf("ls again printed %q", got)
	}
	if got := requestsSince(before, srv.Counts()); got != "0 requests ()" {
		t.Errorf("ls again sent %s", got)
	}
	writeFile(t, m.path("d/new"), []byte("y"))
	if err := os.Remove(m.path("d/f0")); err != nil {
		t.Fatal(err)
	}
	// (The unlink's lookup asks ahead about the names after f0: those
	// HEADs may land during the ls.)
	before = srv.Counts()
	if got := ls(); got != "f1 f2 f3 f4 new" {
		t.Errorf("ls after a create and an unlink printed %q", got)
	}
	if n := srv.Counts()["ListObjectsV2"] - before["ListObjectsV2"]; n != 1 {
		t.Errorf("ls after a create and an unlink sent %d listings, want 1", n)
	}
}

// The second rsync of a tree, by a mount that has listed none of it (a
// fresh one), stats every file: each directory is listed once two of its
// names were looked up, and the HEADs of the files go out ahead of the
// lookups, many at once (headGate). A copy of new files into such a
// directory then asks nothing per name: the listing says they are absent.
func TestRsyncAgainByAFreshMountAsksInParallel(t *testing.T) {
	gate := newHeadGate("/net/", false, 8)
	srv := startServerWith(t, store.NewMemory(), gate.wrap)
	m := startMount(t, srv)
	run(t, "rsync", "-a", goNet+"/", m.path("net"))
	m.stop(t)

	gate.on.Store(true)
	m = startMount(t, srv, "stat_ttl=1m") // the copy below comes within it
	before := srv.Counts()
	out := run(t, "rsync", "-ai", goNet+"/", m.path("net"))
	if strings.Contains(out, ">f") {
		t.Errorf("the second rsync sent files again:\n%s", out)
	}
	if files, _ := gate.mostWaiting(); files < 8 {
		t.Errorf("at most %d HEADs were under way at once", files)
	}
	if again := gate.askedAgain(); len(again) > 0 {
		t.Errorf("the second rsync asked for %d objects twice: %v", len(again), again)
	}
	t.Logf("the second rsync: %s", requestsSince(before, srv.Counts()))

	src := smallTree(t, 20)
	before = srv.Counts()
	run(t, "cp", "-r", src+"/.", m.path("net/http"))
	if got := requestsSince(before, srv.Counts()); got != "20 requests (PutObject=20)" {
		t.Errorf("a copy of 20 new files into a listed directory sent %s", got)
	}
}

// A directory too big to list on demand (over 10,000 entries) is listed so
// once — ten pages, then given up — and its names are looked up one by one
// from then on, not listed again every stat_ttl.
func TestTooBigToListOnDemand(t *testing.T) {
	var pages, heads atomic.Int64
	srv := startServerWith(t, store.NewMemory(), func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			switch {
			case r.Method == http.MethodGet && q.Get("prefix") == "big/" && q.Get("delimiter") == "/":
				pages.Add(1)
			case r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/big/k"):
				heads.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	})
	for i := range 10_001 {
		srv.putByOther(t, fmt.Sprintf("big/k%05d", i), nil)
	}
	m := startMount(t, srv, "stat_ttl=200ms")
	stat := func(names ...string) {
		for _, name := range names {
			if _, err := os.Stat(m.path("big/" + name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	stat("k00001", "k05002", "k10000") // the second lists ten pages, in vain
	time.Sleep(300 * time.Millisecond) // what is tested: stat_ttl running out
	stat("k00003", "k05004", "k09999")
	if pages.Load() != 10 || heads.Load() != 6 {
		t.Errorf("six lookups in a directory of 10,001 entries: %d pages of its listing, %d HEADs; want 10 and 6", pages.Load(), heads.Load())
	}
}

// A lookup in a directory whose list has expired lists it again only if
// it held less than a page: one request, as the lookup would cost. A
// larger one is left to the rule for directories with no list (the second
// lookup within stat_ttl lists it): it was listed again whole, three
// requests here for one stat, twenty for a directory of 20,000 entries.
func TestLookupAfterStatTTLListsAgainOnlyWhatIsSmall(t *testing.T) {
	var bigPages, smallPages atomic.Int64
	srv := startServerWith(t, store.NewMemory(), func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if q := r.URL.Query(); r.Method == http.MethodGet && q.Get("delimiter") == "/" {
				switch q.Get("prefix") {
				case "big/":
					bigPages.Add(1)
				case "small/":
					smallPages.Add(1)
				}
			}
			h.ServeHTTP(w, r)
		})
	})
	for i := range 2_001 {
		srv.putByOther(t, fmt.Sprintf("big/k%04d", i), nil)
	}
	for i := range 10 {
		srv.putByOther(t, fmt.Sprintf("small/s%d", i), nil)
	}
	m := startMount(t, srv, "stat_ttl=1s") // long enough for the first stats to count as within it
	stat := func(names ...string) {
		t.Helper()
		for _, name := range names {
			if _, err := os.Stat(m.path(name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	stat("big/k0000", "big/k0001", "small/s0", "small/s1") // each second lists
	if bigPages.Load() != 3 || smallPages.Load() != 1 {
		t.Fatalf("second lookups listed %d and %d pages, want 3 and 1", bigPages.Load(), smallPages.Load())
	}
	time.Sleep(1100 * time.Millisecond) // what is tested: stat_ttl running out
	stat("big/k0002", "small/s2")
	if bigPages.Load() != 3 || smallPages.Load() != 2 {
		t.Errorf("a stat in each after stat_ttl: %d pages of the large one's listing in all, %d of the small one's; want 3 and 2",
			bigPages.Load(), smallPages.Load())
	}
}

// The lookup of a file the mount knows, in a small directory whose list
// has expired, asks for the file's HEAD while the listing is under way,
// not after it: one round trip instead of two for the first stat in each
// directory of a tree looked at again after stat_ttl (git status, make).
// The server holds the listing until the HEAD comes (a second at most).
func TestLookupAfterStatTTLAsksWithTheListing(t *testing.T) {
	var armed, together atomic.Bool
	headCame := make(chan struct{})
	var once sync.Once
	srv := startServerWith(t, store.NewMemory(), func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if armed.Load() {
				q := r.URL.Query()
				switch {
				case r.Method == http.MethodHead && strings.HasSuffix(r.URL.Path, "/small/s1"):
					once.Do(func() { close(headCame) })
				case r.Method == http.MethodGet && q.Get("prefix") == "small/" && q.Get("delimiter") == "/":
					select {
					case <-headCame:
						together.Store(true)
					case <-time.After(time.Second):
					}
				}
			}
			h.ServeHTTP(w, r)
		})
	})
	for i := range 10 {
		srv.putByOther(t, fmt.Sprintf("small/s%d", i), []byte{byte(i)})
	}
	m := startMount(t, srv, "stat_ttl=1s")
	for _, name := range []string{"s0", "s1"} { // the second lists
		if _, err := os.Stat(m.path("small/" + name)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1100 * time.Millisecond) // what is tested: stat_ttl running out
	armed.Store(true)
	if info, err := os.Stat(m.path("small/s1")); err != nil || info.Size() != 1 {
		t.Fatalf("stat after stat_ttl: %v %v", info, err)
	}
	if !together.Load() {
		t.Error("the lookup asked for the file's HEAD only after the listing")
	}
}

// FIFOs, sockets and device nodes (mkfifo, mknod, rsync -a, which copies
// them with -D) are empty objects with their type in x-oss-meta-mode and a
// device's number in x-oss-meta-rdev, as ossfs and s3fs keep them: a fresh
// mount shows them as they were made, a second rsync resends nothing, and
// chmod, rename and unlink work on them.
func TestSpecialFiles(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "plain"), []byte("plain"))
	run(t, "mkfifo", "-m", "640", filepath.Join(src, "fifo"))
	run(t, "mknod", filepath.Join(src, "loop"), "b", "7", "0")
	run(t, "rsync", "-a", src+"/", m.path("tree"))
	if out := run(t, "rsync", "-ai", src+"/", m.path("tree")); out != "" {
		t.Errorf("the second rsync changed something:\n%s", out)
	}
	run(t, "mknod", m.path("null"), "c", "1", "3")
	run(t, "python3", "-c", "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", m.path("sock"))
	run(t, "mkfifo", m.path("moved"))
	run(t, "chmod", "600", m.path("moved"))
	run(t, "mv", m.path("moved"), m.path("tree/moved"))
	for key, want := range map[string][2]string{
		"tree/fifo":  {strconv.Itoa(syscall.S_IFIFO | 0o640), ""},
		"tree/loop":  {strconv.Itoa(syscall.S_IFBLK | 0o644), strconv.Itoa(7 << 8)},
		"null":       {strconv.Itoa(syscall.S_IFCHR | 0o644), strconv.Itoa(1<<8 | 3)},
		"tree/moved": {strconv.Itoa(syscall.S_IFIFO | 0o600), ""},
	} {
		obj, err := srv.store.Head(testBucket, key)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		if obj.Size != 0 || obj.Attrs.Meta["mode"] != want[0] || obj.Attrs.Meta["rdev"] != want[1] {
			t.Errorf("%s: %d bytes, mode %q, rdev %q; want 0, %q, %q", key, obj.Size, obj.Attrs.Meta["mode"], obj.Attrs.Meta["rdev"], want[0], want[1])
		}
	}
	m.stop(t)

	m = startMount(t, srv)
	// find trusts the types a directory read gives (d_type) and stats
	// nothing: a listing says only "object", and the lookups of the
	// kernel's READDIRPLUS must correct them.
	found := strings.Fields(run(t, "find", m.dir, "-type", "p", "-o", "-type", "b", "-o", "-type", "c", "-o", "-type", "s"))
	slices.Sort(found)
	if want := []string{m.path("null"), m.path("sock"), m.path("tree/fifo"), m.path("tree/loop"), m.path("tree/moved")}; !slices.Equal(found, want) {
		t.Errorf("find of special files in a fresh mount: %q, want %q", found, want)
	}
	got := run(t, "stat", "-c", "%n %F %a %t:%T", m.path("tree/fifo"), m.path("tree/loop"), m.path("tree/moved"), m.path("null"), m.path("sock"))
	want := strings.Join([]string{
		m.path("tree/fifo") + " fifo 640 0:0",
		m.path("tree/loop") + " block special file 644 7:0",
		m.path("tree/moved") + " fifo 600 0:0",
		m.path("null") + " character special file 644 1:3",
		m.path("sock") + " socket 755 0:0",
	}, "\n") + "\n"
	if got != want {
		t.Errorf("a fresh mount shows\n%swant\n%s", got, want)
	}
	if out := run(t, "rsync", "-ai", src+"/", m.path("tree")); out != "" {
		t.Errorf("rsync through a fresh mount changed something:\n%s", out)
	}
	for _, name := range []string{"tree/fifo", "null", "sock"} {
		if err := os.Remove(m.path(name)); err != nil {
			t.Fatal(err)
		}
		if srv.exists(name) {
			t.Errorf("%s is still in the bucket after rm", name)
		}
	}
}

// Writes through a shared mapping reach the bucket, as programs that map
// files (databases, legacy applications) expect: msync then close uploads
// them like write(2)'s (in write-back mode, fsync waits for that upload); a
// program that closes the descriptor first and writes to the mapping
// afterwards has them uploaded once it unmaps it (the kernel writes the
// dirty pages back when the mapping goes, and the last release uploads).
func TestSharedMappingWrites(t *testing.T) {
	srv := startServer(t)
	for _, mode := range []string{"sync", "writeback"} {
		var opts []string
		if mode == "writeback" {
			opts = append(opts, "writeback")
		}
		m := startMount(t, srv, opts...)
		mapped := func(name string, size int) (*os.File, []byte) {
			f, err := os.OpenFile(m.path(name), os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(int64(size)); err != nil {
				t.Fatal(err)
			}
			mem, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
			if err != nil {
				t.Fatal(err)
			}
			return f, mem
		}

		synced := mode + "-synced"
		want := make([]byte, 3<<20)
		f, mem := mapped(synced, len(want))
		copy(mem, "start")
		copy(mem[1<<20:], randomBytes(t, 100<<10))
		copy(mem[len(mem)-3:], "end")
		copy(want, mem)
		if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
			t.Fatal(err)
		}
		if mode == "writeback" {
			if err := f.Sync(); err != nil {
				t.Fatalf("%s: fsync after msync: %v", mode, err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatalf("%s: close after msync: %v", mode, err)
		}
		srv.sameObject(t, synced, want)
		if err := syscall.Munmap(mem); err != nil {
			t.Fatal(err)
		}

		closedFirst := mode + "-closed-first"
		want = make([]byte, 64<<10)
		f, mem = mapped(closedFirst, len(want))
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		copy(mem, "written after the close")
		copy(mem[len(mem)-5:], "tail!")
		copy(want, mem)
		if err := syscall.Munmap(mem); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the unmapped file's upload", func() bool {
			return srv.exists(closedFirst) && bytes.Equal(srv.object(t, closedFirst), want)
		})
		if got, err := os.ReadFile(m.path(closedFirst)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: read back through the mount: %v", mode, err)
		}
	}
}

// cp inside the mount: copy_file_range of a whole object into the file cp
// has just created is a copy on the server — no GET, no PUT, the bytes
// never cross the mount — and the new file reads, appends, renames and
// takes a chmod like any other. What the server cannot copy (a file
// being written, a small one, onto a key with an upload queued) the
// kernel copies through reads and writes.
func TestCopyInsideTheMountIsTheServers(t *testing.T) {
	srv := startServer(t)
	for _, mode := range bothModes {
		data := randomBytes(t, 5<<20)
		srv.putByOther(t, mode.name+"-others", data)
		m := startMount(t, srv, mode.opts...)
		dir := mode.name + "/"
		if err := os.Mkdir(m.path(mode.name), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, m.path(dir+"src"), data)
		if mode.name == "writeback" {
			run(t, "sync", m.path(dir+"src")) // in the bucket, the queue done with it
		}
		before := srv.Counts()
		run(t, "cp", m.path(dir+"src"), m.path(dir+"dst"))
		requests := requestsSince(before, srv.Counts())
		srv.sameObject(t, dir+"dst", data) // in write-back mode too: nothing to queue
		if srv.Counts()["CopyObject"] == before["CopyObject"] || srv.Counts()["GetObject"] != before["GetObject"] || srv.Counts()["PutObject"] != before["PutObject"] {
			t.Errorf("%s: cp made %s, want a copy on the server and no GET or PUT", mode.name, requests)
		}
		if got, err := os.ReadFile(m.path(dir + "dst")); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: dst read back: %v", mode.name, err)
		}
		// cp -p: the copy takes the mode and mtime cp sets after it.
		run(t, "cp", "-p", m.path(dir+"src"), m.path(dir+"kept"))
		src, _ := os.Stat(m.path(dir + "src"))
		if fi, err := os.Stat(m.path(dir + "kept")); err != nil || !fi.ModTime().Equal(src.ModTime()) {
			t.Errorf("%s: cp -p: %v %v, want the mtime %v", mode.name, fi.ModTime(), err, src.ModTime())
		}
		// An append, a chmod and a rename of a copy.
		f, err := os.OpenFile(m.path(dir+"dst"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("appended")
		if err := f.Close(); err != nil {
			t.Fatalf("%s: close after the append: %v", mode.name, err)
		}
		run(t, "cp", m.path(dir+"src"), m.path(dir+"moved"))
		if err := os.Chmod(m.path(dir+"moved"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(m.path(dir+"moved"), m.path(dir+"renamed")); err != nil {
			t.Fatal(err)
		}
		// A file still being written, and a small one: the kernel's copies.
		w, err := os.Create(m.path(dir + "open"))
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data[:2<<20])
		run(t, "cp", m.path(dir+"open"), m.path(dir+"of-open"))
		w.Close()
		writeFile(t, m.path(dir+"small"), data[:1000])
		run(t, "cp", m.path(dir+"small"), m.path(dir+"of-small"))
		// Of an object another client put, which the mount only looked up.
		copies := srv.Counts()["CopyObject"]
		run(t, "cp", m.path(mode.name+"-others"), m.path(dir+"of-others"))
		if srv.Counts()["CopyObject"] == copies {
			t.Errorf("%s: cp of another client's object made no copy on the server", mode.name)
		}
		// Over an existing file (cp's open truncates it).
		run(t, "sync", m.path(dir+"small"))
		copies = srv.Counts()["CopyObject"]
		run(t, "cp", m.path(dir+"src"), m.path(dir+"small"))
		if srv.Counts()["CopyObject"] == copies {
			t.Errorf("%s: cp over an existing file made no copy on the server", mode.name)
		}
		if mode.name == "writeback" {
			// Onto a key whose earlier version's upload is under way: a
			// copy on the server would be overwritten by it. (The uploads
			// before are done, so that the one held is that version's.)
			run(t, "sync", m.path(mode.name))
			release := make(chan struct{})
			srv.AddFault(osslocal.Fault{Op: "PutObject", Before: func() { <-release }, Count: 1})
			writeFile(t, m.path(dir+"busy"), []byte("the version before"))
			run(t, "cp", m.path(dir+"src"), m.path(dir+"busy"))
			close(release)
		}
		m.stop(t)
		srv.ClearFaults()
		if mode.name == "writeback" {
			srv.sameObject(t, dir+"busy", data)
		}

		srv.sameObject(t, dir+"dst", append(slices.Clone(data), "appended"...))
		srv.sameObject(t, dir+"kept", data)
		srv.sameObject(t, dir+"renamed", data)
		srv.sameObject(t, dir+"of-open", data[:2<<20])
		srv.sameObject(t, dir+"of-small", data[:1000])
		srv.sameObject(t, dir+"small", data)
		srv.sameObject(t, dir+"of-others", data)
		if srv.exists(dir + "moved") {
			t.Errorf("%s: the renamed copy's old key is still there", mode.name)
		}
	}
}

// A rename elsewhere does not wait for a copy on the server: the copy lets
// go of the keys once it holds its file (whose own rename or unlink waits
// for it). A copy of a few GiB takes seconds on OSS; an editor's save (a
// rename) meanwhile hung until it was done.
func TestRenameElsewhereDuringACopyOnTheServer(t *testing.T) {
	// The copy is a PUT of its destination key.
	srv, m, started, release := mountHolding(t, http.MethodPut, "copy")
	data := randomBytes(t, 2<<20)
	writeFile(t, m.path("src"), data)
	writeFile(t, m.path("other"), []byte("other"))
	copied := renameWhileHeld(t, started, release, m.path("other"), m.path("other-renamed"), func() error {
		return exec.Command("cp", m.path("src"), m.path("copy")).Run()
	})
	if err := copied(); err != nil {
		t.Fatalf("cp: %v", err)
	}
	srv.sameObject(t, "copy", data)
	srv.sameObject(t, "other-renamed", []byte("other"))
}

// A directory rename that fails part way (here the third copy, every time)
// deletes the copies it made: the new name does not appear half filled,
// and mv, which moves the directory into one it finds there after a
// failed rename, reports the failure instead of making moved/tree. The
// same goes for a rename onto an empty directory, whose marker stays.
func TestFailedDirectoryRenameUndoesItsCopies(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv)
	os.Mkdir(m.path("tree"), 0o755)
	for i := range 6 {
		writeFile(t, m.path(fmt.Sprintf("tree/f%d", i)), []byte{byte(i)})
	}
	os.Mkdir(m.path("empty"), 0o755)
	srv.AddFault(osslocal.Fault{Op: "CopyObject", Status: 500, After: 2})
	for _, target := range []string{"moved", "empty"} {
		out, err := exec.Command("mv", m.path("tree"), m.path(target)).CombinedOutput()
		if err == nil {
			t.Fatalf("mv tree %s succeeded with copies failing", target)
		}
		if !strings.Contains(string(out), "Input/output error") {
			t.Fatalf("mv tree %s: %s", target, out)
		}
	}
	for _, k := range srv.keys(t) {
		if strings.HasPrefix(k, "moved/") || (strings.HasPrefix(k, "empty/") && k != "empty/") {
			t.Errorf("a copy of the failed renames is left: %s", k)
		}
	}
	if !srv.exists("empty/") {
		t.Error("the empty directory's marker went with the copies")
	}
	for i := range 6 {
		srv.sameObject(t, fmt.Sprintf("tree/f%d", i), []byte{byte(i)})
	}
}

// A directory with no marker (a prefix another tool wrote) stops existing
// in the bucket with its last object; for the mount that emptied it, it
// lasts until rmdir. With stat_ttl=0 every step asks the bucket again:
// rm -r's rmdir of such a directory found it gone and failed (ENOENT), as
// it did whenever the removal took longer than stat_ttl.
func TestEmptiedDirectoryLastsUntilRmdir(t *testing.T) {
	srv := startServer(t)
	for i := range 10 {
		srv.putByOther(t, fmt.Sprintf("imp/d/f%d", i), []byte("x"))
	}
	srv.putByOther(t, "solo/f", []byte("x"))
	m := startMount(t, srv, "stat_ttl=0")
	run(t, "rm", "-r", m.path("imp"))
	if err := os.Remove(m.path("solo/f")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(m.path("solo")); err != nil || !fi.IsDir() {
		t.Fatalf("the emptied directory: %v %v", fi, err)
	}
	if entries, err := os.ReadDir(m.path("")); err != nil || len(entries) != 1 || entries[0].Name() != "solo" {
		t.Fatalf("the root lists %v (%v), want the emptied directory", entries, err)
	}
	if err := os.Remove(m.path("solo")); err != nil {
		t.Fatalf("rmdir: %v", err)
	}
	if _, err := os.Stat(m.path("solo")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after rmdir: %v", err)
	}
	if keys := srv.keys(t); len(keys) != 0 {
		t.Fatalf("left in the bucket: %v", keys)
	}
}

// A rename whose copy landed and whose delete was refused (a policy that
// denies deletes) fails, and leaves the object under both names: the mount
// shows both at once. The kernel's negative entry for the new name, from
// the rename's own lookup, and the directory's listing hid it for
// stat_ttl (here an hour).
func TestRenameWithDeleteRefusedShowsBothNames(t *testing.T) {
	srv := startServer(t)
	m := startMount(t, srv, "stat_ttl=1h")
	writeFile(t, m.path("f"), []byte("content"))
	srv.AddFault(osslocal.Fault{Op: "DeleteObject", Status: 403})
	if err := os.Rename(m.path("f"), m.path("g")); errnoOf(err) != syscall.EACCES {
		t.Fatalf("rename with every delete refused: %v, want EACCES", err)
	}
	// The kernel hears of the new name once the rename has returned.
	waitUntil(t, "the new name to be found", func() bool {
		_, err := os.Stat(m.path("g"))
		return err == nil
	})
	entries, err := os.ReadDir(m.path(""))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if fmt.Sprint(names) != "[f g]" {
		t.Errorf("listed %v, want [f g]", names)
	}
	for _, name := range []string{"f", "g"} {
		if got, err := os.ReadFile(m.path(name)); err != nil || string(got) != "content" {
			t.Errorf("%s: %q, %v", name, got, err)
		}
	}
}
