package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/cache"
)

// DirContentType is the Content-Type of directory markers.
const DirContentType = "application/x-directory"

// Config holds the per-mount settings every upload carries.
type Config struct {
	StorageClass    string // x-oss-storage-class
	ACL             string // x-oss-object-acl
	ForbidOverwrite bool   // x-oss-forbid-overwrite: true
	PartSize        int64  // first part size of streamed uploads; 0: DefaultPartSize
	Parallel        int    // parts in flight per streamed upload; 0: 4
}

func (c Config) partSize() int64 {
	if c.PartSize > 0 {
		return c.PartSize
	}
	return DefaultPartSize
}

func (c Config) parallel() int {
	if c.Parallel > 0 {
		return c.Parallel
	}
	return 4
}

// PartSize is the first part size of streamed uploads.
func (u *Uploader) PartSize() int64 { return u.cfg.partSize() }

// Parallel is how many transfers of one file run at once (-o parallel).
func (u *Uploader) Parallel() int { return u.cfg.parallel() }

// Uploader puts staged bodies into a bucket with their headers.
type Uploader struct {
	bucket bucket.Bucket
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	// aborting counts the aborts of streams running in the background.
	aborting sync.WaitGroup
	aborts   atomic.Int64
}

// Wait waits for the aborts of given-up streams still being sent, so that
// an unmount does not leave their uploads open.
func (u *Uploader) Wait() {
	if n := u.aborts.Load(); n > 0 {
		u.log.Info("waiting for the aborts of given-up multipart uploads", "uploads", n)
	}
	u.aborting.Wait()
}

// abortUpload drops a multipart upload that was given up. One the server
// no longer knows (a completion that failed may have ended it) is no
// failure; any other leaves it in the ledger for the next mount.
func (u *Uploader) abortUpload(key, id string) {
	if err := u.bucket.AbortMultipart(context.Background(), key, id); err != nil && !errors.Is(err, bucket.ErrNotFound) {
		u.log.Warn("abort of a multipart upload failed; the next mount of the bucket aborts it", "key", key, "upload_id", id, "err", err)
	}
}

// New returns an Uploader.
func New(b bucket.Bucket, cfg Config, log *slog.Logger) *Uploader {
	return &Uploader{bucket: b, cfg: cfg, log: log, now: time.Now}
}

// Attrs returns the object attributes an upload of key with md sets:
// metadata, Content-Type from the extension, storage class and ACL.
func (u *Uploader) Attrs(key string, md Metadata, contentType string) bucket.Attrs {
	if contentType == "" {
		contentType = ContentType(key)
	}
	return bucket.Attrs{ContentType: contentType, Meta: md.Encode(), StorageClass: u.cfg.StorageClass, ACL: u.cfg.ACL}
}

// ContentType guesses a Content-Type from the key's extension.
func ContentType(key string) string {
	if t := mime.TypeByExtension(path.Ext(key)); t != "" {
		return t
	}
	return "application/octet-stream"
}

// Put uploads size bytes of body as key. The name rules are checked again
// here so that nothing invalid is ever sent, whatever the caller did.
func (u *Uploader) Put(ctx context.Context, key string, body io.ReaderAt, size int64, md Metadata) error {
	return u.put(ctx, key, body, size, u.Attrs(key, md, ""), true)
}

// PutDirMarker uploads the zero-byte marker of a directory (key ends in "/").
func (u *Uploader) PutDirMarker(ctx context.Context, key string, md Metadata) error {
	return u.put(ctx, key, emptyReader{}, 0, u.Attrs(key, md, DirContentType), true)
}

// put uploads body as key. logFailure says whether a failed request is
// logged here; the write-back queue logs its attempts itself (retrying,
// giving up), so that each failure is one line.
func (u *Uploader) put(ctx context.Context, key string, body io.ReaderAt, size int64, attrs bucket.Attrs, logFailure bool) error {
	if err := ValidateKey(key); err != nil {
		u.log.Warn("refusing to upload invalid name", "key", key, "err", err)
		return err
	}
	attrs.ForbidOverwrite = u.cfg.ForbidOverwrite
	start := u.now()
	var (
		res    bucket.PutResult
		copied int64
		done   bool
		err    error
	)
	if src, ok := body.(unchangedSource); ok {
		res, copied, done, err = u.putCopying(ctx, key, body, src, size, attrs)
	}
	if !done && absentEnd(body) > 0 {
		// Its start is only in the object it came from: the caller
		// fetches it, and uploads again.
		u.log.Debug("the start of a file could not be copied on the server; it is fetched, then the whole file sent", "key", key)
		return fmt.Errorf("upload of %s: %w", key, cache.ErrAbsent)
	}
	if !done {
		res, err = u.bucket.Put(ctx, bucket.PutRequest{Key: key, Body: body, Size: size, Attrs: attrs,
			Progress: u.newProgress(key, size).sent})
	}
	elapsed := u.now().Sub(start)
	if err != nil && logFailure {
		u.log.Error("upload failed", "key", key, "size", humanize.IBytes(uint64(size)), "request_id", bucket.RequestID(err), "err", err)
	}
	if err != nil {
		return err
	}
	setSource(body, key, res.ETag)
	// Its humanized fields cost more than the check, once per file.
	if u.log.Enabled(ctx, slog.LevelDebug) {
		attrs := []any{"key", key, "size", humanize.IBytes(uint64(size)), "took", elapsed.Round(time.Millisecond).String(),
			"rate", rate(size, elapsed), "etag", res.ETag, "request_id", res.RequestID}
		if copied > 0 {
			attrs = append(attrs, "copied_on_server", humanize.IBytes(uint64(copied)))
		}
		u.log.Debug("uploaded", attrs...)
	}
	return nil
}

// rate is a humanized throughput.
func rate(size int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return humanize.IBytes(uint64(float64(size)/d.Seconds())) + "/s"
}

type emptyReader struct{}

func (emptyReader) ReadAt([]byte, int64) (int, error) { return 0, io.EOF }
