package fs

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// A copy larger than one reply can say it copied (4 GiB; 1 MiB here) is one
// copy on the server: cp's first copy_file_range copies the object whole,
// the calls for the rest only say so — unless the new file changed in
// between, when the kernel copies the rest itself.
func TestCopyOfMoreThanOneReply(t *testing.T) {
	old := maxCopyReply
	maxCopyReply = 1 << 20
	t.Cleanup(func() { maxCopyReply = old })
	dir, b := mountFake(t)
	data := make([]byte, 3<<20+12345)
	rand.Read(data)
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}

	copies, puts, gets := b.Calls("CopyObject"), b.Calls("PutObject"), b.Calls("GetObject")
	if out, err := exec.Command("cp", src, filepath.Join(dir, "dst")).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	if b.Calls("CopyObject") != copies+1 || b.Calls("PutObject") != puts || b.Calls("GetObject") != gets {
		t.Errorf("cp made %d copies, %d PUTs and %d GETs, want one copy and nothing else",
			b.Calls("CopyObject")-copies, b.Calls("PutObject")-puts, b.Calls("GetObject")-gets)
	}
	if got := objectContent(t, b, "dst"); got != string(data) {
		t.Fatalf("dst: %d bytes in the bucket, want the %d copied", len(got), len(data))
	}

	// A file uploaded and still open, its staging file held: the object
	// is what is staged, and the server copies it too.
	open, err := os.OpenFile(filepath.Join(dir, "open"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if _, err := open.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := open.Sync(); err != nil {
		t.Fatal(err)
	}
	copies, puts = b.Calls("CopyObject"), b.Calls("PutObject")
	if out, err := exec.Command("cp", open.Name(), filepath.Join(dir, "of-open")).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	if b.Calls("CopyObject") != copies+1 || b.Calls("PutObject") != puts {
		t.Errorf("cp of a file open after its upload made %d copies and %d PUTs, want one copy",
			b.Calls("CopyObject")-copies, b.Calls("PutObject")-puts)
	}
	if got := objectContent(t, b, "of-open"); got != string(data) {
		t.Fatalf("of-open: %d bytes in the bucket, want the %d copied", len(got), len(data))
	}

	// The kernel asks for at most one reply's worth (4 GiB) at a time; and
	// a write to the new file between two calls has the rest copied over
	// it, as a copy of bytes would.
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(filepath.Join(dir, "written"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var offIn, offOut int64
	copies = b.Calls("CopyObject")
	n, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out.Fd()), &offOut, 1<<20, 0)
	if err != nil || n != 1<<20 || b.Calls("CopyObject") != copies+1 {
		t.Fatalf("first copy_file_range of one reply's 1 MiB: %d, %v, %d copies on the server; want 1 MiB in one copy",
			n, err, b.Calls("CopyObject")-copies)
	}
	if _, err := out.WriteAt([]byte("written between"), 2<<20); err != nil {
		t.Fatal(err)
	}
	for offIn < int64(len(data)) {
		n, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out.Fd()), &offOut, len(data)-int(offIn), 0)
		if err != nil || n == 0 {
			t.Fatalf("copy_file_range at %d: %d, %v", offIn, n, err)
		}
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if got := objectContent(t, b, "written"); !bytes.Equal([]byte(got), data) {
		t.Errorf("written: the bucket holds other bytes than the source's (%d bytes, want %d)", len(got), len(data))
	}
}
