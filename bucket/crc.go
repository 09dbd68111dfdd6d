package bucket

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"

	"github.com/ossmount/ossmount/internal/crc64"
)

// Upload integrity. The SDK checks every upload's CRC-64 against the
// x-oss-hash-crc64ecma the server returns, with hash/crc64: a third of
// ossmount's CPU when it writes a big file (profiled). Its check is turned
// off (NewOSS) and this one does the same with internal/crc64, ~7× faster:
// in the SDK's response handlers, so that a mismatch is retried as the
// SDK retries its own, and reported as ErrIntegrity.

// crcHeader is where OSS reports the CRC-64 of what it stored.
const crcHeader = "x-oss-hash-crc64ecma"

// crcMismatch is a failed check. Its text has what the SDK's retryer
// looks for in its own check's error ("crc is inconsistent").
type crcMismatch struct {
	client uint64
	server string
}

func (e *crcMismatch) Error() string {
	return fmt.Sprintf("crc is inconsistent, client %d, server %s", e.client, e.server)
}

// checkCRC adds a response handler comparing the CRC the server reports,
// when it reports one, with want's, unless want skips the response.
func checkCRC(want func(*http.Response) (crc uint64, check bool, err error)) func(*oss.Options) {
	handler := func(resp *http.Response) error {
		server := resp.Header.Get(crcHeader)
		if server == "" || resp.StatusCode/100 != 2 {
			return nil
		}
		client, check, err := want(resp)
		if err != nil || !check {
			return err
		}
		return compareCRC(client, server)
	}
	return func(o *oss.Options) { o.ResponseHandlers = append(o.ResponseHandlers, handler) }
}

func compareCRC(client uint64, server string) error {
	if strconv.FormatUint(client, 10) != server {
		return &crcMismatch{client: client, server: server}
	}
	return nil
}

// summedBody is a request body that sums the bytes the SDK sends as it
// reads them. The SDK seeks back to the start to retry, which starts the
// sum again. The HTTP transport reads in its own goroutine — for a request
// the server answered early, possibly still while the SDK seeks for the
// retry — hence mu, held across the reads and seeks themselves.
type summedBody struct {
	mu     sync.Mutex
	r      io.ReadSeeker // GUARDED_BY(mu)
	crc    uint64        // GUARDED_BY(mu); of the body's first summed bytes
	summed int64         // GUARDED_BY(mu)
	pos    int64         // GUARDED_BY(mu)
}

func (b *summedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.r.Read(p)
	if b.pos == b.summed {
		b.crc = crc64.Update(b.crc, p[:n])
		b.summed += int64(n)
	}
	b.pos += int64(n)
	return n, err
}

func (b *summedBody) Seek(off int64, whence int) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	pos, err := b.r.Seek(off, whence)
	b.pos = pos
	if pos == 0 {
		b.crc, b.summed = 0, 0
	}
	return pos, err
}

// sum is the CRC of the whole body of size bytes, as it was sent.
func (b *summedBody) sum(size int64) (uint64, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.summed != size {
		return 0, false, fmt.Errorf("upload check: %d of %d bytes were read", b.summed, size)
	}
	return b.crc, true, nil
}

// uploaderCRC gives the CRCs that the Uploader's part uploads for body
// (size bytes, parts of partSize) must report, reading each part again
// from body when its response comes. Completing is not retried on a
// mismatch, which would find the upload gone: object checks the object's
// CRC after the Uploader returns, as the SDK does.
type uploaderCRC struct {
	body     io.ReaderAt
	size     int64
	partSize int64

	mu    sync.Mutex
	parts map[int]uint64 // GUARDED_BY(mu); by part number
}

func (u *uploaderCRC) want(resp *http.Response) (uint64, bool, error) {
	s := resp.Request.URL.Query().Get("partNumber")
	if s == "" {
		return 0, false, nil // completion: see object
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, false, fmt.Errorf("upload check: part number %q", s)
	}
	off := int64(n-1) * u.partSize
	crc, err := crc64.ReaderAt(u.body, off, min(u.partSize, u.size-off))
	if err != nil {
		err = fmt.Errorf("upload check: reading the body: %w", err)
	} else {
		u.mu.Lock()
		u.parts[n] = crc
		u.mu.Unlock()
	}
	return crc, true, err
}

// object checks the CRC the server reports for the object uploaded.
func (u *uploaderCRC) object(server *string) error {
	if server == nil {
		return nil
	}
	crc, err := u.sum()
	if err != nil {
		return err
	}
	return compareCRC(crc, *server)
}

// sum is the CRC of the object the parts sent make.
func (u *uploaderCRC) sum() (uint64, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var crc uint64
	for n, off := 1, int64(0); off < u.size; n, off = n+1, off+u.partSize {
		part, ok := u.parts[n]
		if !ok {
			return 0, fmt.Errorf("upload check: no CRC for part %d", n)
		}
		crc = crc64.Combine(crc, part, min(u.partSize, u.size-off))
	}
	return crc, nil
}
