package upload

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/ossmount/ossmount/bucket"
)

// DefaultPartSize is the first part size of multipart uploads.
const DefaultPartSize = 8 << 20

// maxParts is OSS's limit on the parts of one upload.
const maxParts = 10000

// PartSize is the size of part index i (0-based) of a streamed upload whose
// final size is unknown: base for the first thousand parts, then doubling
// every thousand parts, so that 10,000 parts hold 1,023,000 × base (8 TB
// with 8 MiB parts) instead of the 80 GB a fixed 8 MiB part allows.
func PartSize(base int64, i int) int64 { return base << (i / 1000) }

// cacheDropper is a body whose bytes can leave memory once a part holding
// them is uploaded (cache.Staging.DropCached).
type cacheDropper interface {
	DropCached(off, size int64) error
}

// partTracker is a body that learns how far a stream's parts are sent
// (cache.Staging): bytes the bucket holds as parts may leave a full cache
// disk, and a writer short of room waits for parts in flight. It is told
// only while the upload is alive, and told when it ends.
type partTracker interface {
	Sending(key string, handed, sent int64)
	StreamEnded()
}

// ErrStreamAborted is returned by Stream.Complete after Abort.
var ErrStreamAborted = errors.New("streamed upload aborted")

// Stream uploads a file while it is still being written sequentially:
// each part is sent as soon as the staged file holds all its bytes, with a
// bounded number of parts in flight, so that completing costs little more
// than the last part. Parts read from body at the time they are sent; the
// caller guarantees that bytes already handed to a part (below Handed) are
// not written again, or aborts.
type Stream struct {
	u    *Uploader
	key  string
	body io.ReaderAt
	// attrs are sent at initiation: a file's metadata as it is when its
	// first part is due.
	attrs    bucket.Attrs
	slots    chan struct{} // parts in flight
	progress *progress     // since the stream began
	// parts is the context of the parts' requests: they outlive the write
	// that started them, and end at once when the stream is given up — an
	// abort (and the unmount waiting for it) does not wait for parts no
	// one needs, through the SDK's retries of a server that does not answer.
	partsCtx    context.Context
	cancelParts context.CancelFunc

	mu       sync.Mutex
	uploadID string        // GUARDED_BY(mu)
	sent     int64         // GUARDED_BY(mu); bytes of finished parts
	parts    []bucket.Part // GUARDED_BY(mu); by index
	handed   int64         // GUARDED_BY(mu); bytes given to parts
	// inOrder parts from the first are in the bucket, sentInOrder bytes.
	inOrder     int   // GUARDED_BY(mu)
	sentInOrder int64 // GUARDED_BY(mu)
	err         error // GUARDED_BY(mu); first failure
	wg          sync.WaitGroup
}

// NewStream prepares a streamed upload of key; nothing is sent until a
// part is due.
func (u *Uploader) NewStream(key string, body io.ReaderAt, md Metadata) *Stream {
	attrs := u.Attrs(key, md, "")
	attrs.ForbidOverwrite = u.cfg.ForbidOverwrite
	ctx, cancel := context.WithCancel(context.Background())
	return &Stream{u: u, key: key, body: body, attrs: attrs, slots: make(chan struct{}, u.cfg.parallel()),
		progress: u.newProgress(key, -1), partsCtx: ctx, cancelParts: cancel}
}

// Attrs returns the attributes the stream sends.
func (s *Stream) Attrs() bucket.Attrs { return s.attrs }

// Key is the object the stream uploads.
func (s *Stream) Key() string { return s.key }

// Handed is the offset below which the staged bytes belong to parts.
func (s *Stream) Handed() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handed
}

// Written tells the stream that the staged file now holds size bytes. Every
// part that size completes (leaving at least one byte for the last part)
// is queued; at most Parallel parts are in flight, and the writer does not
// wait for them: staged data is on disk, and -o cache_size bounds it.
func (s *Stream) Written(ctx context.Context, size int64) error {
	for {
		s.mu.Lock()
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return err
		}
		i := len(s.parts)
		partSize := PartSize(s.u.cfg.partSize(), i)
		off := s.handed
		if size-off <= partSize || i >= maxParts-1 {
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		if err := s.startPart(ctx, i, off, partSize); err != nil {
			return err
		}
	}
}

// startPart initiates the upload if needed and sends part i in the
// background once a slot is free.
func (s *Stream) startPart(ctx context.Context, i int, off, size int64) error {
	s.mu.Lock()
	if s.uploadID == "" && s.err == nil {
		// Initiation happens under mu so that it happens once; only the
		// writer's path can wait on it, as no part is in flight yet.
		id, err := s.u.bucket.StartMultipart(ctx, s.key, s.attrs)
		if err != nil {
			s.err = err
		}
		s.uploadID = id
	}
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return err
	}
	id := s.uploadID
	s.parts = append(s.parts, bucket.Part{})
	s.handed = off + size
	s.trackLocked()
	s.mu.Unlock()

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.slots <- struct{}{}
		defer func() { <-s.slots }()
		s.mu.Lock()
		aborted := s.err != nil
		s.mu.Unlock()
		if aborted {
			return
		}
		p, err := s.u.bucket.UploadPart(s.partsCtx, s.key, id, i+1, s.body, off, size)
		s.mu.Lock()
		defer s.mu.Unlock()
		if err != nil {
			if s.err == nil {
				s.err = err
				s.endTrackingLocked()
			}
			return
		}
		if i < len(s.parts) {
			s.parts[i] = p
			// A part in the bucket has its number; one in flight is zero.
			for s.inOrder < len(s.parts) && s.parts[s.inOrder].Number != 0 {
				s.sentInOrder += s.parts[s.inOrder].Size
				s.inOrder++
			}
			s.trackLocked()
		}
		if d, ok := s.body.(cacheDropper); ok {
			go func() {
				if err := d.DropCached(off, size); err != nil {
					s.u.log.Warn("staged part kept in memory: writing it to the cache disk failed", "key", s.key, "part", i+1, "err", err)
				}
			}()
		}
		s.sent += size
		s.progress.sent(s.sent)
	}()
	return nil
}

// Complete sends what remains up to size, waits for every part and
// completes the upload. On failure the upload is aborted and the error
// returned; the caller then uploads the whole file another way.
func (s *Stream) Complete(ctx context.Context, size int64) error {
	err := s.Written(ctx, size)
	if err == nil {
		s.mu.Lock()
		i, off := len(s.parts), s.handed
		s.mu.Unlock()
		if size > off || i == 0 {
			err = s.startPart(ctx, i, off, size-off)
		}
	}
	s.wg.Wait()
	s.mu.Lock()
	if err == nil {
		err = s.err
	}
	id, parts := s.uploadID, s.parts
	s.mu.Unlock()
	if err == nil {
		var res bucket.PutResult
		res, err = s.u.bucket.CompleteMultipart(ctx, s.key, id, parts, s.attrs)
		if err == nil {
			s.cancelParts() // none in flight: its resources go
			s.mu.Lock()
			s.endTrackingLocked()
			s.mu.Unlock()
			setSource(s.body, s.key, res.ETag)
			elapsed := s.u.now().Sub(s.progress.start)
			s.u.log.Debug("uploaded", "key", s.key, "size", humanize.IBytes(uint64(size)), "parts", len(parts),
				"took", elapsed.Round(time.Millisecond).String(), "rate", rate(size, elapsed), "etag", res.ETag, "request_id", res.RequestID)
			return nil
		}
	}
	s.u.log.Warn("streamed upload failed; uploading the whole file instead", "key", s.key, "request_id", bucket.RequestID(err), "err", err)
	s.Abort()
	return err
}

// Abort gives the upload up: parts in flight are cancelled, then the
// upload is aborted in the background. It is idempotent.
func (s *Stream) Abort() {
	s.mu.Lock()
	if s.err == nil {
		s.err = ErrStreamAborted
		s.endTrackingLocked()
	}
	id := s.uploadID
	s.uploadID = ""
	s.mu.Unlock()
	s.cancelParts()
	if id == "" {
		return
	}
	s.u.aborting.Add(1)
	s.u.aborts.Add(1)
	go func() {
		defer s.u.aborting.Done()
		defer s.u.aborts.Add(-1)
		s.wg.Wait()
		s.u.abortUpload(s.key, id)
	}()
}

// trackLocked tells a partTracker body where the upload stands, while it
// is alive. LOCKS_REQUIRED(s.mu)
func (s *Stream) trackLocked() {
	t, ok := s.body.(partTracker)
	if !ok || s.err != nil {
		return
	}
	t.Sending(s.key, s.handed, s.sentInOrder)
}

// endTrackingLocked tells a partTracker body that the upload ended.
// LOCKS_REQUIRED(s.mu)
func (s *Stream) endTrackingLocked() {
	if t, ok := s.body.(partTracker); ok {
		t.StreamEnded()
	}
}
