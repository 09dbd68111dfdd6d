package fs

import (
	"context"
	"errors"
	"syscall"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/upload"
)

// errnoTable is the only mapping from errors to errnos (DESIGN §3). The
// first sentinel an error wraps decides; anything unknown is EIO.
var errnoTable = []struct {
	err   error
	errno syscall.Errno
}{
	{upload.ErrInvalidName, syscall.EINVAL},
	{upload.ErrNameTooLong, syscall.ENAMETOOLONG},
	{bucket.ErrNotFound, syscall.ENOENT},
	{bucket.ErrAccessDenied, syscall.EACCES},
	{bucket.ErrExists, syscall.EEXIST},
	{bucket.ErrInvalidName, syscall.EINVAL},
	{bucket.ErrNoSuchBucket, syscall.EIO},
	{bucket.ErrTransient, syscall.EIO},
	{bucket.ErrRejected, syscall.EIO},
	{bucket.ErrIntegrity, syscall.EIO},
	// Another client replaced the object a handle reads, or an edit was
	// copying: NFS's and gcsfuse's answer to a file changed behind a
	// handle. An open that gets it is looked up again by the kernel.
	{bucket.ErrChanged, syscall.ESTALE},
	{context.Canceled, syscall.EINTR},
}

// errnoOf maps err to an errno. A syscall.Errno (a local disk error such as
// ENOSPC) passes through.
func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	for _, e := range errnoTable {
		if errors.Is(err, e.err) {
			return e.errno
		}
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return syscall.EIO
}

// fail maps err to an errno and logs every failure with the operation,
// the key and the request id — but ENOENT, and ESTALE for a file unlinked
// meanwhile, which are answers rather than failures. An object another
// client changed is logged: the reader loses its read.
func (f *FS) fail(op, key string, err error) syscall.Errno {
	errno := errnoOf(err)
	quiet := errno == 0 || errno == syscall.ENOENT || errno == syscall.ESTALE && !errors.Is(err, bucket.ErrChanged)
	if !quiet {
		f.log.Warn(op+" failed", "key", key, "errno", errno.Error(), "request_id", bucket.RequestID(err), "err", err)
	}
	return errno
}
