package fs

import (
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// A lookup that returned a file's node just before the file was renamed:
// go-fuse adds the node under the old name once the lookup returns, after
// the rename has moved it — the node then has two names in go-fuse's tree.
// Its keys must still be the new name's: a write through a descriptor
// opened before lands in the renamed object, not under the old name.
func TestLookupReturningAcrossARename(t *testing.T) {
	// Once armed, the next lookup of d/y that finds the node waits, past
	// its return, until the rename is done. Installed before the mount
	// serves, and removed after it stops.
	var armed atomic.Bool
	returned, goOn := make(chan struct{}), make(chan struct{})
	letGo := sync.OnceFunc(func() { close(goOn) })
	lookupReturning = func(parent *dirNode, name string, found *gofs.Inode) {
		if name == "y" && found != nil && armed.CompareAndSwap(true, false) {
			close(returned)
			<-goOn
		}
	}
	t.Cleanup(func() { lookupReturning = nil })
	dir, b := mountFake(t)
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "d", "y")
	if err := os.WriteFile(old, []byte("before"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(old, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	armed.Store(true)
	defer letGo() // on a failure too: the unmount waits for that lookup
	statted := make(chan error, 1)
	go func() {
		_, err := os.Stat(old) // the kernel revalidates d/y: a lookup
		statted <- err
	}()
	<-returned
	if err := os.Rename(old, filepath.Join(dir, "c")); err != nil {
		t.Fatal(err)
	}
	// A lookup takes the keys, which the rename keeps until go-fuse has
	// moved the node: after this one, the rename is over.
	if _, err := os.Stat(filepath.Join(dir, "c")); err != nil {
		t.Fatal(err)
	}
	letGo()
	<-statted

	if _, err := f.WriteAt([]byte("after!"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := objectContent(t, b, "c"); got != "after!" {
		t.Errorf("c holds %q, want %q", got, "after!")
	}
	if got := objectContent(t, b, "d/y"); got != "absent" {
		t.Errorf("d/y holds %q, want no object", got)
	}
}
