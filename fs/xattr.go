package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// noXattrs gives a node the extended-attribute answers of a file system
// that has none: reads find nothing, and setting one is ENOTSUP, which
// tools such as cp -a and rsync -X take as "not supported here" rather
// than as a failure.
type noXattrs struct{}

var (
	_ = (gofs.NodeGetxattrer)((*fileNode)(nil))
	_ = (gofs.NodeSetxattrer)((*dirNode)(nil))
	_ = (gofs.NodeListxattrer)((*symlinkNode)(nil))
	_ = (gofs.NodeRemovexattrer)((*fileNode)(nil))
)

func (noXattrs) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENODATA
}

func (noXattrs) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.ENOTSUP
}

func (noXattrs) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return syscall.ENODATA
}

func (noXattrs) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return 0, 0
}
