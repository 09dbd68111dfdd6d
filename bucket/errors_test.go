package bucket_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/bucket/store"
	"github.com/ossmount/ossmount/integration/osslocal"
)

// What a server's error status amounts to: a 4xx without a meaning of
// ours is a rejection (the same request would fail again), not a
// transient failure; a timeout or throttling is transient. The server's
// code stays in the message.
func TestErrorStatusKinds(t *testing.T) {
	for _, c := range []struct {
		status int
		want   error
		code   string
	}{
		{400, bucket.ErrRejected, "InvalidArgument"},
		{429, bucket.ErrTransient, "TooManyRequests"},
		{500, bucket.ErrTransient, "InternalError"},
		{403, bucket.ErrAccessDenied, "AccessDenied"},
	} {
		cfg := localConfig(serveLocal(t, store.NewMemory(), osslocal.Fault{Op: "PutObject", Status: c.status}))
		cfg.RetryMaxAttempts = 1
		_, err := bucket.NewOSS(cfg).Put(context.Background(), bucket.PutRequest{Key: "k", Body: bytes.NewReader([]byte("x")), Size: 1})
		if !errors.Is(err, c.want) {
			t.Errorf("status %d: got %v, want %v", c.status, err, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.code) {
			t.Errorf("status %d: %q does not name the server's code %s", c.status, err, c.code)
		}
	}
}

// ossfs's readwrite_timeout: a server that stops answering fails the
// request, as a transient failure, instead of holding it for as long as
// it stalls.
func TestReadWriteTimeout(t *testing.T) {
	stalled := make(chan struct{})
	cfg := localConfig(serveLocal(t, store.NewMemory(), osslocal.Fault{Op: "PutObject", Before: func() { <-stalled }}))
	t.Cleanup(func() { close(stalled) }) // before the server's close, which waits for it
	cfg.ReadWriteTimeout, cfg.RetryMaxAttempts = 200*time.Millisecond, 1
	start := time.Now()
	_, err := bucket.NewOSS(cfg).Put(context.Background(), bucket.PutRequest{Key: "k", Body: strings.NewReader("x"), Size: 1})
	if !errors.Is(err, bucket.ErrTransient) || time.Since(start) > 30*time.Second {
		t.Fatalf("put to a stalled server: %v after %v, want a transient failure at the timeout", err, time.Since(start))
	}
}

// A server with a certificate no authority signed is refused, unless told
// (ossfs's no_check_certificate).
func TestSkipCertificateCheck(t *testing.T) {
	s := store.NewMemory()
	if err := s.CreateBucket("test-bucket"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(osslocal.New(osslocal.Config{Store: s, Keys: map[string]string{"id": "secret"}}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	t.Cleanup(srv.Close)
	put := func(cfg bucket.Config) error {
		_, err := bucket.NewOSS(cfg).Put(context.Background(), bucket.PutRequest{Key: "k", Body: strings.NewReader("x"), Size: 1})
		return err
	}
	cfg := localConfig(srv.URL)
	cfg.RetryMaxAttempts = 1
	if err := put(cfg); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("put to a self-signed server: %v, want a certificate error", err)
	}
	cfg.SkipCertificateCheck = true
	if err := put(cfg); err != nil {
		t.Fatalf("put with the check skipped: %v", err)
	}
}

// A completion whose reply is lost (the connection drops once the server
// has joined the parts) is sent again by the SDK, and the server, whose
// upload is gone, answers NoSuchUpload. The object holding the upload's
// bytes — its size and CRC-64 — is the upload done, not a failure: the
// Uploader's (a whole file) and a stream's.
func TestCompletionWithALostReply(t *testing.T) {
	data := make([]byte, 300<<10+5)
	for i := range data {
		data[i] = byte(i * 7)
	}
	s := store.NewMemory()
	cfg := localConfig(serveLocal(t, s, osslocal.Fault{Op: "CompleteMultipartUpload", LoseReply: true, Count: 2}))
	cfg.PartSize = 100 << 10
	b := bucket.NewOSS(cfg)
	ctx := context.Background()
	check := func(key string) {
		t.Helper()
		_, body, err := s.Open("test-bucket", key, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		defer body.Close()
		if got, _ := io.ReadAll(body); !bytes.Equal(got, data) {
			t.Fatalf("%s holds %d other bytes", key, len(got))
		}
	}
	if _, err := b.Put(ctx, bucket.PutRequest{Key: "whole", Body: bytes.NewReader(data), Size: int64(len(data))}); err != nil {
		t.Fatalf("put whose completion's reply was lost: %v", err)
	}
	check("whole")

	id, err := b.StartMultipart(ctx, "streamed", bucket.Attrs{})
	if err != nil {
		t.Fatal(err)
	}
	var parts []bucket.Part
	for off := int64(0); off < int64(len(data)); off += 128 << 10 {
		p, err := b.UploadPart(ctx, "streamed", id, len(parts)+1, bytes.NewReader(data), off, min(128<<10, int64(len(data))-off))
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, p)
	}
	if _, err := b.CompleteMultipart(ctx, "streamed", id, parts, bucket.Attrs{}); err != nil {
		t.Fatalf("completion whose reply was lost: %v", err)
	}
	check("streamed")
}

// The same for a PutObject that must not overwrite (forbid_overwrite): sent
// again, it finds its own object and is answered FileAlreadyExists. An
// object of other bytes there is the conflict it is.
func TestForbiddenOverwriteWithALostReply(t *testing.T) {
	s := store.NewMemory()
	url := serveLocal(t, s, osslocal.Fault{Op: "PutObject", LoseReply: true, Count: 1})
	b := bucket.NewOSS(localConfig(url))
	put := func(data string) error {
		_, err := b.Put(context.Background(), bucket.PutRequest{Key: "k", Body: strings.NewReader(data), Size: int64(len(data)),
			Attrs: bucket.Attrs{ForbidOverwrite: true}})
		return err
	}
	if err := put("first"); err != nil {
		t.Fatalf("put whose reply was lost: %v", err)
	}
	if err := put("other"); !errors.Is(err, bucket.ErrExists) {
		t.Fatalf("put over another object: %v, want ErrExists", err)
	}
}

// An upload that went away under a write (a lifecycle rule, another
// client) fails the write as a transient failure (EIO; sending the file
// again works), not as "not found" (ENOENT at close); aborting it again is
// the upload gone as asked.
func TestUploadGoneUnderAWrite(t *testing.T) {
	b := bucket.NewOSS(localConfig(serveLocal(t, store.NewMemory())))
	ctx := context.Background()
	id, err := b.StartMultipart(ctx, "k", bucket.Attrs{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AbortMultipart(ctx, "k", id); err != nil {
		t.Fatal(err)
	}
	_, err = b.UploadPart(ctx, "k", id, 1, strings.NewReader("part"), 0, 4)
	if !errors.Is(err, bucket.ErrTransient) {
		t.Fatalf("part of a gone upload: %v, want ErrTransient", err)
	}
	if _, err := b.CompleteMultipart(ctx, "k", id, nil, bucket.Attrs{}); !errors.Is(err, bucket.ErrTransient) {
		t.Fatalf("completion of a gone upload: %v, want ErrTransient", err)
	}
	if err := b.AbortMultipart(ctx, "k", id); !errors.Is(err, bucket.ErrNotFound) {
		t.Fatalf("abort of a gone upload: %v, want ErrNotFound", err)
	}
}

// A multipart upload tells its progress as its parts finish.
func TestPutReportsProgress(t *testing.T) {
	cfg := localConfig(serveLocal(t, store.NewMemory()))
	cfg.PartSize = 100 << 10
	data := make([]byte, 300<<10+5)
	var mu sync.Mutex
	var reports []int64
	_, err := bucket.NewOSS(cfg).Put(context.Background(), bucket.PutRequest{Key: "k", Body: bytes.NewReader(data), Size: int64(len(data)),
		Progress: func(sent int64) {
			mu.Lock()
			reports = append(reports, sent)
			mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 4 || reports[3] != int64(len(data)) {
		t.Fatalf("progress %v, want 4 reports ending at %d", reports, len(data))
	}
}
