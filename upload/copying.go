package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/internal/crc64"
)

// Uploads that copy what did not change. A file edited in place or
// appended to was copied in from its object first; what the edit left as
// it was, the server already holds. Such a file goes up in parts: the
// parts it left unchanged are copied on the server from the version the
// file came from (UploadPartCopy), the others are sent — appending a line
// to a 1 GB log sends a part, not the gigabyte. Each copied part's CRC-64
// (when the server returns one) is checked against the staged bytes before
// the upload completes, and the completed object's against theirs all
// together. If a copy fails — the object changed or went away since, a sum
// differs — the upload is aborted and the whole file sent instead (every
// byte is staged); so too after a completion whose sum differs.
//
// A file staged without its start (cache/absent.go) has its start copied
// in parts that end where its staged bytes begin. Their sums are known
// only together, from the object's sum: each part's sum the server
// returns adds up to it, and the completion is checked with it. If that
// upload fails, the caller fetches the start, and the whole file is sent.

// copyPartSize is the most a copied part holds when a run of parts is
// copied (oss.DefaultCopyPartSize, the SDK's Copier's part).
const copyPartSize = 64 << 20

// unchangedSource is a body that knows which of its ranges an object holds
// (cache.Staging after a download).
type unchangedSource interface {
	Unchanged(off, end int64) (key, etag string, ok bool)
}

// absentSource is a body whose start is not staged, only in the object
// version it came from, whose CRC-64 over it is crc (cache/absent.go).
type absentSource interface {
	Absent() (key, etag string, end int64, crc uint64)
}

// absentEnd is where the staged bytes of body start (0: all are staged).
func absentEnd(body io.ReaderAt) int64 {
	if a, ok := body.(absentSource); ok {
		_, _, end, _ := a.Absent()
		return end
	}
	return 0
}

// sourceSetter is a body that can be told which object it now is
// (cache.Staging.SetSource).
type sourceSetter interface {
	SetSource(key, etag string)
}

// setSource tells a body that can be told (sourceSetter) that it is the
// object key in version etag now: an upload holds its writers back, so
// the next upload of it, after an fsync, copies what stays.
func setSource(body io.ReaderAt, key, etag string) {
	if s, ok := body.(sourceSetter); ok && etag != "" {
		s.SetSource(key, etag)
	}
}

// putCopying uploads size bytes of body as key, copying its unchanged
// parts, and returns how many bytes it copied. It returns done false when
// no part is worth copying, or when a copy found its source gone or
// changed (the upload aborted): the caller then uploads the whole file.
func (u *Uploader) putCopying(ctx context.Context, key string, body io.ReaderAt, src unchangedSource, size int64, attrs bucket.Attrs) (res bucket.PutResult, copied int64, done bool, err error) {
	var akey, aetag string
	var aend int64
	var acrc uint64
	if a, ok := body.(absentSource); ok {
		akey, aetag, aend, acrc = a.Absent()
	}
	partSize := u.PartSize()
	for size/partSize >= maxParts-1 { // one more part ends at aend
		partSize *= 2
	}
	// A single part is as well sent: the file changed somewhere.
	if size < 2*partSize && aend == 0 {
		return res, 0, false, nil
	}
	type plan struct {
		off, size int64
		src       bucket.CopySource
		copy      bool
	}
	var plans []plan
	absentParts := 0
	var end int64
	for off := int64(0); off < size; off = end {
		end = min(off+partSize, size)
		if off < aend && end > aend {
			end = aend
		}
		p := plan{off: off, size: end - off}
		if off < aend {
			p.copy, p.src = true, bucket.CopySource{Key: akey, ETag: aetag, Off: p.off, Size: p.size, Unsummed: true}
		} else if skey, etag, ok := src.Unchanged(p.off, p.off+p.size); ok {
			p.copy, p.src = true, bucket.CopySource{Key: skey, ETag: etag, Off: p.off, Size: p.size}
		}
		if p.copy {
			copied += p.size
			// A run of copied parts is copied in parts of up to
			// copyPartSize: fewer requests, as the SDK's Copier.
			if last := len(plans) - 1; last >= 0 && plans[last].copy && plans[last].src.Unsummed == p.src.Unsummed &&
				plans[last].src.Key == p.src.Key && plans[last].src.ETag == p.src.ETag && plans[last].size+p.size <= max(copyPartSize, partSize) {
				plans[last].size += p.size
				plans[last].src.Size += p.size
				continue
			}
			if p.src.Unsummed {
				absentParts++
			}
		}
		plans = append(plans, p)
	}
	if copied == 0 {
		return res, 0, false, nil
	}
	id, err := u.bucket.StartMultipart(ctx, key, attrs)
	if err != nil {
		return res, 0, true, err
	}
	parts := make([]bucket.Part, len(plans))
	errs := make([]error, len(plans)) // of parts sent
	copyErrs := make([]error, len(plans))
	var wg sync.WaitGroup
	slots := make(chan struct{}, u.cfg.parallel())
	prog := u.newProgress(key, size)
	var finished atomic.Int64 // bytes of the parts done
	for i, p := range plans {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			defer func() { prog.sent(finished.Add(p.size)) }()
			if !p.copy {
				parts[i], errs[i] = u.bucket.UploadPart(ctx, key, id, i+1, body, p.off, p.size)
				return
			}
			if !p.src.Unsummed {
				if p.src.CRC64, errs[i] = crc64.ReaderAt(body, p.off, p.size); errs[i] != nil {
					return
				}
			}
			parts[i], copyErrs[i] = u.bucket.CopyPart(ctx, key, id, i+1, p.src)
		}()
	}
	wg.Wait()
	if absentParts > 0 && errors.Join(copyErrs...) == nil {
		copyErrs[0] = absentSums(key, parts[:absentParts], acrc)
	}
	if err := errors.Join(copyErrs...); err != nil {
		u.abortUpload(key, id)
		level := slog.LevelWarn
		if errors.Is(err, bucket.ErrChanged) || errors.Is(err, bucket.ErrNotFound) {
			// Expected in write-back mode: a version queued before this
			// one replaced the object this one was read from.
			level = slog.LevelDebug
		}
		u.log.Log(ctx, level, "copying the unchanged parts of a file failed; uploading the whole file", "key", key, "err", err)
		return res, 0, false, nil
	}
	if err := errors.Join(errs...); err != nil {
		u.abortUpload(key, id)
		return res, 0, true, err
	}
	if res, err = u.bucket.CompleteMultipart(ctx, key, id, parts, attrs); err != nil {
		u.abortUpload(key, id)
		if errors.Is(err, bucket.ErrIntegrity) {
			u.log.Warn("an object of copied and sent parts differs from the file; uploading the whole file", "key", key, "err", err)
			return res, 0, false, nil
		}
	}
	return res, copied, true, err
}

// absentSums gives the parts copied for an absent start their sums: the
// start's, crc, on the last, none on the others, so that the completion's
// check adds them up to crc. If the server returned a sum for each part,
// they must add up to crc too.
func absentSums(key string, parts []bucket.Part, crc uint64) error {
	var server uint64
	all := true
	for i := range parts {
		all = all && parts[i].CRC64 != 0
		server = crc64.Combine(server, parts[i].CRC64, parts[i].Size)
		parts[i].CRC64 = 0
	}
	if all && server != crc {
		return &bucket.Error{Op: "UploadPartCopy", Key: key, Kind: bucket.ErrIntegrity,
			Err: fmt.Errorf("copied parts' CRC64 %d, the object's start's %d", server, crc)}
	}
	parts[len(parts)-1].CRC64 = crc
	return nil
}
