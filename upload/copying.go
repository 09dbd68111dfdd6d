package upload

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"

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

// unchangedSource is a body that knows which of its ranges an object holds
// (cache.Staging after a download).
type unchangedSource interface {
	Unchanged(off, end int64) (key, etag string, ok bool)
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
	partSize := u.PartSize()
	for size/partSize >= maxParts {
		partSize *= 2
	}
	// A single part is as well sent: the file changed somewhere.
	if size < 2*partSize {
		return res, 0, false, nil
	}
	type plan struct {
		off, size int64
		src       bucket.CopySource
		copy      bool
	}
	var plans []plan
	for off := int64(0); off < size; off += partSize {
		p := plan{off: off, size: min(partSize, size-off)}
		if skey, etag, ok := src.Unchanged(p.off, p.off+p.size); ok {
			p.copy, p.src = true, bucket.CopySource{Key: skey, ETag: etag, Off: p.off, Size: p.size}
			copied += p.size
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
	for i, p := range plans {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			if !p.copy {
				parts[i], errs[i] = u.bucket.UploadPart(ctx, key, id, i+1, body, p.off, p.size)
				return
			}
			if p.src.CRC64, errs[i] = crc64.ReaderAt(body, p.off, p.size); errs[i] == nil {
				parts[i], copyErrs[i] = u.bucket.CopyPart(ctx, key, id, i+1, p.src)
			}
		}()
	}
	wg.Wait()
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
