package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/dustin/go-humanize"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/cache"
	"github.com/ossmount/ossmount/internal/crc64"
	"github.com/ossmount/ossmount/upload"
)

// Staging from the end (cache/absent.go). A large object this mount holds
// no copy of is staged from its last part when opened for writing:
// `echo line >> big.log`, or a program that opens its log and appends,
// reads one part instead of the whole object, and its close has the server
// copy the rest. Whatever needs the bytes not staged — a write there, a
// truncate into them, reads there beyond the first few (readAbsent) —
// fetches them first, as the open did before. A rename of the file or of a
// directory above it, or a held metadata change, uploads it instead, as it
// does a dirty file, the start copied on the server.
//
// In write-back mode such a file is never queued: a queued upload would
// copy the start from an object another client may replace before it runs,
// after the close was acknowledged. Its close uploads it, as a streamed
// file's does (submit). Write-back mode stages from the end only objects
// too large to be kept: one that can be kept is read in whole at its first
// open, and later appends then close at local speed.

// errStartGone is a file staged from the end whose start is no longer in
// the bucket: its content can never be uploaded.
var errStartGone = errors.New("the start of the file is gone from the bucket")

// stageEnd stages the object's last part into st, an empty staging file,
// if the object is large enough and the server gives its CRC-64 (which
// checks the copied start); it returns the object's size, or -1 when the
// caller downloads the object instead.
func (n *fileNode) stageEnd(ctx context.Context, st *cache.Staging, hint int64, letKeysGo func()) (int64, error) {
	part := n.fsys.cfg.Uploader.PartSize()
	if hint < 2*part || n.fsys.queue != nil && n.fsys.cfg.Cache.Keepable(hint) {
		return -1, nil
	}
	key := n.key()
	if letKeysGo != nil {
		letKeysGo()
	}
	info, err := n.fsys.bucket.Head(ctx, key)
	if err != nil || info.CRC64 == 0 || info.Size < 2*part {
		return -1, nil // the download says what is wrong, if anything
	}
	end := info.Size / part * part
	tail := info.Size - end
	if err := st.Truncate(info.Size); err != nil {
		return 0, err
	}
	if tail > 0 {
		copied, _, _, err := n.downloadRange(ctx, st, key, end, tail, info.ETag)
		if errors.Is(err, bucket.ErrChanged) || err == nil && copied < tail {
			// Replaced since the HEAD: the download reads what is there.
			return -1, st.Truncate(0)
		}
		if err != nil {
			return 0, err
		}
	}
	sum, err := crc64.ReaderAt(st, end, tail)
	if err != nil {
		return 0, err
	}
	st.SetSource(key, info.ETag)
	st.SetAbsent(key, info.ETag, end, crc64.Uncombine(info.CRC64, sum, tail))
	n.fsys.log.Debug("staged the end of an object", "key", key, "size", humanize.IBytes(uint64(info.Size)), "staged", humanize.IBytes(uint64(tail)))
	return info.Size, nil
}

// fillAbsent fetches the start of a file staged from the end, if it has
// one not staged. LOCKS_REQUIRED(n.freeze, exclusively)
func (n *fileNode) fillAbsent(ctx context.Context, st *cache.Staging) error {
	key, etag, end, _ := st.Absent()
	if end == 0 {
		return nil
	}
	n.fsys.log.Debug("fetching the start of a file staged from its end", "key", key, "size", humanize.IBytes(uint64(end)))
	err := n.downloadChunks(ctx, st.AbsentWriter(), key, etag, 0, end)
	if errors.Is(err, bucket.ErrChanged) || errors.Is(err, bucket.ErrNotFound) {
		// Another client replaced or removed the object since the open:
		// the file's start is not to be had, and the file is stale.
		n.fsys.log.Warn("the object a file was opened from was replaced or removed before its start was read in; the file cannot be read there, and its changes cannot be uploaded",
			"key", key, "err", err)
		return fmt.Errorf("%s: %w (%v): %w", key, errStartGone, err, syscall.ESTALE)
	}
	if err != nil {
		return err
	}
	st.Filled()
	return nil
}

// absentReadServed is how much of the start of a file staged from its end
// reads are served from the object before the start is read in: a program
// that reads a little there (`head`, a header) does not wait for all of
// it, and one that reads on (`cmp`, `grep`, a database's pages) soon gets
// it read in, in parallel chunks, and then read from the disk.
const absentReadServed = 1 << 20

// readAbsent serves a read of p at off, which begins in the start of st
// not staged, from the object version that start is (the rest, if any,
// from st), and reports whether it did. It does not once
// absentReadServed bytes were, nor if the object cannot give them (the
// caller's fetchAbsent then says why).
func (n *fileNode) readAbsent(ctx context.Context, st *cache.Staging, p []byte, off int64) (int, bool) {
	key, etag, end, _ := st.Absent()
	n.mu.Lock()
	served := n.staging == st && n.absentRead < absentReadServed
	if served {
		n.absentRead += int64(len(p))
	}
	n.mu.Unlock()
	if !served || off >= end {
		return 0, false
	}
	below := min(int64(len(p)), end-off)
	r, err := n.fsys.getResuming(ctx, key, off, below, etag)
	if err != nil {
		return 0, false
	}
	defer r.Close()
	if _, err := io.ReadFull(r, p[:below]); err != nil {
		return 0, false
	}
	if below == int64(len(p)) {
		return len(p), true
	}
	got, err := st.ReadAt(p[below:], end)
	if err != nil && err != io.EOF {
		return 0, false
	}
	return int(below) + got, true
}

// fetchAbsent fills in the start of st for a read or write that needs it,
// if st is still the file's staging file (otherwise the caller looks again).
func (n *fileNode) fetchAbsent(ctx context.Context, st *cache.Staging) error {
	n.freezeFor("a read of the start of a file staged from its end")
	defer n.freeze.Unlock()
	n.mu.Lock()
	current := n.staging == st
	n.mu.Unlock()
	if !current {
		return nil
	}
	return n.fillAbsent(uninterrupted(ctx), st)
}

// hasAbsentStart reports whether st is staged from its end, with a start
// still not staged.
func hasAbsentStart(st *cache.Staging) bool {
	if st == nil {
		return false
	}
	_, _, end, _ := st.Absent()
	return end > 0
}

// put uploads st as key. A file staged from its end whose start the
// server could not copy (the object changed, or a sum differs) has its
// start fetched, and goes up whole. LOCKS_REQUIRED(n.freeze, exclusively)
func (n *fileNode) put(ctx context.Context, key string, st *cache.Staging, size int64, md upload.Metadata) error {
	err := n.fsys.cfg.Uploader.Put(ctx, key, st, size, md)
	if errors.Is(err, cache.ErrAbsent) {
		if err = n.fillAbsent(ctx, st); err == nil {
			err = n.fsys.cfg.Uploader.Put(ctx, key, st, size, md)
		}
	}
	return err
}
