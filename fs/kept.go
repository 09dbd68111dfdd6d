package fs

import (
	"context"
	"strings"

	"github.com/dustin/go-humanize"

	"github.com/ossmount/ossmount/cache"
)

// Kept copies (cache/kept.go): the staging file of a file released clean
// is kept by the cache under its key, and the next open for writing, or
// read through a handle, uses it instead of the object once a HEAD finds
// the object still the version it holds.

// fromKept takes the copy of the object the cache kept when the file was
// last released (cache/kept.go), if the object is still the version it
// holds: a HEAD instead of copying the whole object in. Otherwise (or if
// none is kept) it returns a nil st and got -1, and the object is
// downloaded. letKeysGo is download's.
func (n *fileNode) fromKept(ctx context.Context, letKeysGo func()) (st *cache.Staging, got int64) {
	key := n.key()
	st, etag, size := n.fsys.cfg.Cache.TakeKept(key)
	if st == nil {
		return nil, -1
	}
	if letKeysGo != nil {
		letKeysGo()
	}
	if !n.fsys.stillObject(ctx, key, etag, size) {
		st.Remove()
		return nil, -1
	}
	n.fsys.log.Debug("staged from the kept copy", "key", key, "size", humanize.IBytes(uint64(size)))
	// The same bytes, maybe under a new name (renamed since).
	st.SetSource(key, etag)
	return st, size
}

// stillObject reports whether the object key is still the version etag of
// size bytes that a kept copy holds (one HEAD).
func (f *FS) stillObject(ctx context.Context, key, etag string, size int64) bool {
	info, err := f.bucket.Head(ctx, key)
	// An ETag from a response header is quoted; one from a response body
	// (a completed multipart upload) may not be.
	if err != nil || strings.Trim(info.ETag, `"`) != strings.Trim(etag, `"`) || info.Size != size {
		f.log.Debug("the kept copy is not the object any more", "key", key, "err", err)
		return false
	}
	return true
}

// keptForReading is the kept copy of key (cache/kept.go) if the object is
// still the version it holds: a handle reads it instead of the object.
func (f *FS) keptForReading(ctx context.Context, key string) *cache.Staging {
	st, etag, size := f.cfg.Cache.LookKept(key)
	if st == nil {
		return nil
	}
	if !f.stillObject(ctx, key, etag, size) {
		f.cfg.Cache.DropKept(key)
		return nil
	}
	return st
}
