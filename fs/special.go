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

// specialNode is a symbolic link — an object whose content is the target
// and whose x-oss-meta-mode has S_IFLNK — or a special file: a FIFO, socket
// or device node, an empty object with its type in x-oss-meta-mode and a
// device's number in x-oss-meta-rdev, as ossfs and s3fs store them. The
// kernel opens special files itself: nothing is read or written through
// the mount.
type specialNode struct {
	gofs.Inode
	noXattrs
	placed
	fsys *FS

	mu     sync.Mutex
	meta   upload.Metadata // GUARDED_BY(mu)
	size   int64           // GUARDED_BY(mu)
	target []byte          // GUARDED_BY(mu); a link's, nil until read
}

// isSpecial says whether mode is a symbolic link's or a special file's.
func isSpecial(mode uint32) bool {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFLNK, syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK:
		return true
	}
	return false
}

var (
	_ = (gofs.NodeReadlinker)((*specialNode)(nil))
	_ = (gofs.NodeGetattrer)((*specialNode)(nil))
	_ = (gofs.NodeSetattrer)((*specialNode)(nil))
)

func (n *specialNode) key() string { return n.fsys.fileKey(n.path()) }

func (n *specialNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
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
func (n *specialNode) readTarget(ctx context.Context, key string) ([]byte, error) {
	r, err := n.fsys.bucket.Get(ctx, bucket.GetRequest{Key: key, Length: -1})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(io.LimitReader(r, 4096))
}

func (n *specialNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	fillAttr(&out.Attr, n.meta, n.size)
	return 0
}

// Setattr (lchown, lutimes) replaces the link object's metadata in place.
func (n *specialNode) Setattr(ctx context.Context, _ gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
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
	md := d.fsys.callerMeta(ctx, syscall.S_IFLNK, 0o777)
	return d.makeSpecial(ctx, "symlink", name, md, []byte(target), out)
}

// Mknod creates a FIFO, socket or device node (mkfifo, mknod, rsync -a and
// tar with special files). Regular files come through Create.
func (d *dirNode) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if !isSpecial(mode) {
		return nil, syscall.EOPNOTSUPP
	}
	ctx = uninterrupted(ctx)
	md := d.fsys.callerMeta(ctx, mode&syscall.S_IFMT, mode)
	if mode&syscall.S_IFMT == syscall.S_IFCHR || mode&syscall.S_IFMT == syscall.S_IFBLK {
		md.Rdev = rdev
	}
	return d.makeSpecial(ctx, "mknod", name, md, nil, out)
}

// makeSpecial writes a symlink's or special file's object at once, in
// either mode, and makes its node.
func (d *dirNode) makeSpecial(ctx context.Context, op, name string, md upload.Metadata, body []byte, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	defer d.fsys.usingKeys("a " + op)()
	key := d.fsys.fileKey(upload.Child(d.path(), name))
	if errno := d.fsys.checkNewName(op, key); errno != 0 {
		return nil, errno
	}
	if err := d.fsys.cfg.Uploader.Put(ctx, key, bytes.NewReader(body), int64(len(body)), md); err != nil {
		return nil, d.fsys.fail(op, key, err)
	}
	sn := &specialNode{fsys: d.fsys, meta: md, size: int64(len(body)), target: body}
	d.fsys.listings.Add(d.dirKey(), name, false)
	fillAttr(&out.Attr, md, sn.size)
	return d.newChild(ctx, name, sn, md.Mode&syscall.S_IFMT), 0
}
