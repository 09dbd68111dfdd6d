package fs

import (
	"bytes"
	"context"
	"io"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/upload"
)

// symlinkNode is a symbolic link: an object whose content is the target and
// whose x-oss-meta-mode has S_IFLNK, as ossfs stores them.
type symlinkNode struct {
	gofs.Inode
	noXattrs
	placed
	fsys *FS

	mu     sync.Mutex
	meta   upload.Metadata // GUARDED_BY(mu)
	size   int64           // GUARDED_BY(mu)
	target []byte          // GUARDED_BY(mu); nil until read
}

var (
	_ = (gofs.NodeReadlinker)((*symlinkNode)(nil))
	_ = (gofs.NodeGetattrer)((*symlinkNode)(nil))
	_ = (gofs.NodeSetattrer)((*symlinkNode)(nil))
)

func (n *symlinkNode) key() string { return n.fsys.fileKey(n.path()) }

func (n *symlinkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	ctx = uninterrupted(ctx)
	n.mu.Lock()
	target := n.target
	n.mu.Unlock()
	if target != nil {
		return target, 0
	}
	keys := n.fsys.holdKeys("a readlink")
	defer keys.letGo()
	var key string
	var err error
	keys.retry(func() bool {
		key = n.key()
		return keys.around(func() { target, err = n.readTarget(ctx, key) })
	})
	if err != nil {
		return nil, n.fsys.fail("readlink", key, err)
	}
	n.mu.Lock()
	n.target = target
	n.mu.Unlock()
	return target, 0
}

// readTarget reads the link's target from its object, key.
func (n *symlinkNode) readTarget(ctx context.Context, key string) ([]byte, error) {
	r, err := n.fsys.bucket.Get(ctx, bucket.GetRequest{Key: key, Length: -1})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(io.LimitReader(r, 4096))
}

func (n *symlinkNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	fillAttr(&out.Attr, n.meta, n.size)
	return 0
}

// Setattr (lchown, lutimes) replaces the link object's metadata in place.
func (n *symlinkNode) Setattr(ctx context.Context, _ gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	n.mu.Lock()
	md, size := n.meta, n.size
	changed := applySetattr(&md, in, n.fsys.now())
	n.mu.Unlock()
	if changed {
		defer n.fsys.usingKeys("a setattr")()
		key := n.key()
		if err := n.fsys.replaceMeta(ctx, key, size, md); err != nil {
			return n.fsys.fail("setattr", key, err)
		}
	}
	n.mu.Lock()
	n.meta = md
	fillAttr(&out.Attr, md, n.size)
	n.mu.Unlock()
	return 0
}

// Symlink creates a link object.
func (d *dirNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ctx = uninterrupted(ctx)
	defer d.fsys.usingKeys("a symlink")()
	key := d.fsys.fileKey(upload.Child(d.path(), name))
	if errno := d.fsys.checkNewName("symlink", key); errno != 0 {
		return nil, errno
	}
	md := d.fsys.callerMeta(ctx, syscall.S_IFLNK, 0o777)
	body := []byte(target)
	if err := d.fsys.cfg.Uploader.Put(ctx, key, bytes.NewReader(body), int64(len(body)), md); err != nil {
		return nil, d.fsys.fail("symlink", key, err)
	}
	sn := &symlinkNode{fsys: d.fsys, meta: md, size: int64(len(body)), target: body}
	d.fsys.listings.Add(d.dirKey(), name, false)
	fillAttr(&out.Attr, md, sn.size)
	return d.newChild(ctx, name, sn, syscall.S_IFLNK), 0
}
