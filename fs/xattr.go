package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// noXattrs gives a node the answers of a file system without extended
// attributes. ENOSYS makes the kernel remember that and answer
// EOPNOTSUPP itself from then on: otherwise it asks for
// security.capability before every write, one more round trip per file.
// cp -a and rsync -X take EOPNOTSUPP as "not supported here".
type noXattrs struct{}

var (
	_ = (gofs.NodeGetxattrer)((*fileNode)(nil))
	_ = (gofs.NodeSetxattrer)((*dirNode)(nil))
	_ = (gofs.NodeListxattrer)((*specialNode)(nil))
	_ = (gofs.NodeRemovexattrer)((*fileNode)(nil))
)

func (noXattrs) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

func (noXattrs) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.ENOSYS
}

func (noXattrs) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return syscall.ENOSYS
}

func (noXattrs) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}
