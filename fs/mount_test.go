package fs

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/cache"
	"github.com/ossmount/ossmount/upload"
)

// mountFake mounts the file system over a fake bucket in this process
// (root and /dev/fuse, like the integration tests), with no kernel caching
// of names and attributes: every path walk asks Lookup again. Tests here
// reach inside the file system (hooks such as lookupReturning), which the
// integration tests, running the binary, cannot.
func mountFake(t *testing.T) (dir string, b *bucket.Fake) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts through /dev/fuse and must run as root")
	}
	b = bucket.NewFake("test-bucket")
	cd, err := cache.OpenDir(filepath.Join(t.TempDir(), "cache"), 0)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fsys := New(Config{Bucket: b, Uploader: upload.New(b, upload.Config{}, log), Cache: cd, Log: log})
	dir = t.TempDir()
	var ttl time.Duration
	server, err := gofs.Mount(dir, fsys.Root(), &gofs.Options{
		MountOptions:    fuse.MountOptions{DirectMount: true, MaxWrite: 1 << 20, ExtraCapabilities: Capabilities},
		EntryTimeout:    &ttl,
		AttrTimeout:     &ttl,
		NegativeTimeout: &ttl,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			t.Error(err)
		}
		fsys.Shutdown(context.Background())
	})
	return dir, b
}

// objectContent returns the object key's content, or "absent".
func objectContent(t *testing.T, b bucket.Bucket, key string) string {
	t.Helper()
	r, err := b.Get(context.Background(), bucket.GetRequest{Key: key, Length: -1})
	if err != nil {
		return "absent"
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
