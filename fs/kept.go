package fs

import (
	"context"

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
	c := n.fsys.cfg.Cache.TakeKept(key)
	if c.Staging == nil {
		return nil, -1
	}
	if letKeysGo != nil {
		letKeysGo()
	}
	if _, still := n.fsys.stillObject(ctx, key, c); !still {
		c.Remove()
		return nil, -1
	}
	n.fsys.log.Debug("staged from the kept copy", "key", key, "size", humanize.IBytes(uint64(c.Size)))
	// The same bytes, maybe under a new name (renamed since).
	c.SetSource(key, c.ETag)
	return c.Staging, c.Size
}

// stillObject reports whether the object key is still the version a kept
// copy holds (one HEAD), and that version's ETag as the HEAD gave it. A
// copy an earlier mount filed must also hold the object's CRC-64: it was
// not synced to the disk, and could have been changed there.
func (f *FS) stillObject(ctx context.Context, key string, c cache.KeptCopy) (etag string, still bool) {
	info, err := f.bucket.Head(ctx, key)
	if err != nil || !sameVersion(info.ETag, c.ETag) || info.Size != c.Size {
		f.log.Debug("the kept copy is not the object any more", "key", key, "err", err)
		return "", false
	}
	if c.Unchecked {
		if info.CRC64 == 0 {
			f.log.Debug("no CRC-64 from the server to check a copy kept from an earlier mount against", "key", key)
			return "", false
		}
		if sum, err := c.CRC64(); err != nil || sum != info.CRC64 {
			f.log.Info("a copy kept from an earlier mount does not hold its object's bytes; the object is read instead", "key", key, "err", err)
			return "", false
		}
	}
	return info.ETag, true
}

// keptForReading is the kept copy of key (cache/kept.go) if the object is
// still the version it holds, and that version's ETag: a handle reads the
// copy instead of the object.
func (f *FS) keptForReading(ctx context.Context, key string) (*cache.Staging, string) {
	c := f.cfg.Cache.LookKept(key)
	if c.Staging == nil {
		return nil, ""
	}
	etag, still := f.stillObject(ctx, key, c)
	if !still {
		f.cfg.Cache.DropKept(key)
		return nil, ""
	}
	if c.Unchecked {
		f.cfg.Cache.Checked(key, c.Staging)
	}
	return c.Staging, etag
}
