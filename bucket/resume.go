package bucket

import (
	"context"
	"io"
)

// GetResuming opens req.Length bytes (> 0) of req.Key at req.Off, like
// Get, and when the connection breaks in the middle of the body — the SDK
// retries requests, not the reading of their bodies — asks for the rest of
// the range again, up to retries times in all, calling broke (for a log
// line) before each. The rest must come from the version the first bytes
// came from (If-Match): spliced onto another one's they would be a file
// nobody wrote; a version replaced meanwhile fails the read with
// ErrChanged. Read returns io.EOF at the end of the range, or earlier if
// the body ends where the server said it would (the object is shorter
// now); an error only once the retries are spent.
func GetResuming(ctx context.Context, b Bucket, req GetRequest, retries int, broke func(off int64, err error)) (Body, error) {
	body, err := b.Get(ctx, req)
	if err != nil {
		return Body{}, err
	}
	if req.IfMatch == "" {
		req.IfMatch = body.ETag
	}
	get := func(off, length int64) (io.ReadCloser, error) {
		req.Off, req.Length = off, length
		return b.Get(ctx, req)
	}
	r := &resuming{get: get, body: body, off: req.Off, end: req.Off + req.Length, retries: retries, broke: broke}
	return Body{ReadCloser: r, ETag: req.IfMatch, Size: body.Size}, nil
}

type resuming struct {
	get      func(off, length int64) (io.ReadCloser, error)
	body     io.ReadCloser // nil once closed for a retry that failed
	off, end int64
	broken   error // the body's error, not yet acted on
	retries  int
	broke    func(off int64, err error)
}

func (r *resuming) Read(p []byte) (int, error) {
	for {
		if r.broken != nil {
			if r.off >= r.end {
				return 0, io.EOF // broken after its last byte
			}
			if r.retries <= 0 {
				return 0, r.broken
			}
			r.retries--
			r.broke(r.off, r.broken)
			r.body.Close()
			body, err := r.get(r.off, r.end-r.off)
			if err != nil {
				r.body, r.broken = nil, err
				r.retries = 0
				return 0, err
			}
			r.body, r.broken = body, nil
		}
		n, err := r.body.Read(p)
		r.off += int64(n)
		if err != nil && err != io.EOF {
			// net/http says io.ErrUnexpectedEOF for a connection closed
			// before the Content-Length was read.
			r.broken = err
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (r *resuming) Close() error {
	if r.body == nil {
		return nil
	}
	return r.body.Close()
}
