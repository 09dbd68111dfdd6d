package fs

import (
	"context"
	"errors"
	"math"
	"sync"
	"syscall"

	"github.com/dustin/go-humanize"
	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/ossmount/ossmount/bucket"
)

// Copies inside the mount. cp (coreutils 9) copies a file's bytes with
// copy_file_range(2) first, and the kernel hands that to the file system.
// A whole object copied into a file cp has just created (or truncated) is
// copied by the server, as a rename moves one: a copy request instead of
// the bytes down from the bucket and up again. The new file is then staged
// from its end with nothing staged (absent.go): it is in the bucket, and a
// read or write of it fetches what it needs, as one of an object opened
// for appending does. Anything else — part of a file, a file being
// written, a small one, a key with an upload queued in write-back mode
// (which would land over the copy) — is left to the kernel, which copies
// with reads and writes on EOPNOTSUPP.
//
// One reply says at most 4 GiB were copied, and cp asks again from there
// for the rest: a larger object is copied whole by the first call, and the
// calls after it, while the new file is still that copy, only say so.

var _ = (gofs.NodeCopyFileRanger)((*fileNode)(nil))

// errNotCopied: the copy is the kernel's to make.
var errNotCopied = errors.New("not copied on the server")

const (
	// minServerCopy: below it the bytes cost less than the requests (a
	// copy and a HEAD instead of a GET and a PUT).
	minServerCopy = 1 << 20
)

// maxCopyReply is the most one reply can say it copied (a variable: tests
// make a copy take several replies with small files).
var maxCopyReply int64 = math.MaxUint32 &^ (1<<12 - 1)

// serverCopy is what a file was made by: a copy on the server of the
// object src, which gave the file's key the version etag of size bytes.
type serverCopy struct {
	src, etag string
	size      int64
}

func (n *fileNode) CopyFileRange(ctx context.Context, _ gofs.FileHandle, offIn uint64, out *gofs.Inode, _ gofs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	dst, ok := out.Operations().(*fileNode)
	if !ok || dst == n || flags != 0 || offIn != offOut || n.fsys.cfg.ForbidOverwrite {
		return 0, syscall.EOPNOTSUPP
	}
	release := sync.OnceFunc(n.fsys.usingKeys("a copy"))
	defer release()
	src := n.key()
	size, inBucket := n.inBucketAsIs(src)
	if !inBucket || size < minServerCopy || length > uint64(size) || offIn > uint64(size)-length {
		return 0, syscall.EOPNOTSUPP
	}
	if offIn > 0 {
		// The rest of a copy an earlier call made whole.
		if !dst.isCopyOf(src, size) {
			return 0, syscall.EOPNOTSUPP
		}
		return uint32(min(int64(length), maxCopyReply)), 0
	}
	// The kernel asks for at most what one reply can say.
	if length < uint64(min(size, maxCopyReply)) {
		return 0, syscall.EOPNOTSUPP
	}
	if err := dst.copyIn(uninterrupted(ctx), src, size, release); err != nil {
		return 0, syscall.EOPNOTSUPP
	}
	return uint32(min(size, maxCopyReply)), 0
}

// inBucketAsIs returns the file's size and whether the object key holds
// its content as the mount knows it: nothing staged, or what is staged
// uploaded and unchanged since (a file just written, whose staging file
// its last release has not dropped yet).
func (n *fileNode) inBucketAsIs(key string) (int64, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.inBucket || n.unlinked {
		return 0, false
	}
	if n.staging != nil {
		if _, ok := n.stagedVersionLocked(key); !ok || n.sealed {
			return 0, false
		}
	}
	return n.size, true
}

// isCopyOf reports whether the file is still what a copy on the server of
// the object src, of size bytes, made: nothing written, truncated or
// uploaded since.
func (n *fileNode) isCopyOf(src string, size int64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := n.copied
	if c == nil || c.src != src || c.size != size || n.size != size {
		return false
	}
	etag, ok := n.stagedVersionLocked(n.key())
	return ok && etag == c.etag
}

// stagedVersionLocked returns the version of the object key that the
// staged content is byte for byte, if it is one: staged, not empty, and
// nothing changed since an upload or a copy made that version.
// LOCKS_REQUIRED(n.mu)
func (n *fileNode) stagedVersionLocked(key string) (etag string, ok bool) {
	st := n.staging
	if st == nil || n.dirty || n.size == 0 {
		return "", false
	}
	skey, etag, ok := st.Unchanged(0, n.size)
	return etag, ok && skey == key
}

// copyIn has the server copy the object src, of size bytes, to the file's
// key, if the file is staged and empty; an error leaves the file as it was
// (an object the copy made is replaced by the file's upload). letKeysGo
// ends the caller's shared hold of the keys once the file's freeze is
// taken: what would change its key — its rename, an unlink, a rename of a
// directory above it — waits for the freeze instead, so that renames
// elsewhere do not wait for the copy; a rename of the source meanwhile
// fails the copy (the kernel's then), or lets it copy the same bytes.
func (n *fileNode) copyIn(ctx context.Context, src string, size int64, letKeysGo func()) error {
	n.freeze.Lock()
	defer n.freeze.Unlock()
	n.mu.Lock()
	st, md := n.staging, n.meta
	// Created, or truncated (O_TRUNC, or a truncate cp's open of an
	// existing file becomes), and nothing written since.
	empty := st != nil && n.size == 0 && !n.sealed && !n.unlinked && n.stream == nil
	n.mu.Unlock()
	if !empty {
		return errNotCopied
	}
	key := n.key()
	if n.fsys.queue != nil {
		// Queued or running, an earlier version's upload would land over
		// the copy (a rename that could queue one under the key waits for
		// the keys, the file's own close for its freeze).
		if _, queued := n.fsys.queue.Queued(key); queued {
			return errNotCopied
		}
	}
	letKeysGo()
	if err := n.fsys.bucket.Copy(ctx, n.fsys.copyWithMeta(src, key, size, md)); err != nil {
		n.fsys.log.Warn("a copy on the server failed; the kernel copies the bytes instead", "key", key, "src", src, "request_id", bucket.RequestID(err), "err", err)
		return err
	}
	// The HEAD gives what a staged start needs: the version, and the
	// CRC-64 that checks the copy of it an upload may make.
	info, err := n.fsys.bucket.Head(ctx, key)
	if err != nil || info.Size != size || info.CRC64 == 0 {
		n.fsys.log.Debug("the object copied on the server is not the one read; the kernel copies the bytes instead", "key", key, "src", src, "size", info.Size, "err", err)
		return errNotCopied
	}
	if err := st.Truncate(size); err != nil {
		return err
	}
	st.SetSource(key, info.ETag)
	st.SetAbsent(key, info.ETag, size, info.CRC64)
	n.mu.Lock()
	n.size = size
	n.copied = &serverCopy{src: src, etag: info.ETag, size: size}
	n.dirty, n.emptyPending, n.streamable = false, false, false
	n.confirmLocked()
	n.mu.Unlock()
	n.fsys.log.Debug("copied on the server", "key", key, "src", src, "size", humanize.IBytes(uint64(size)))
	return nil
}
