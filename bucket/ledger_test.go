package bucket_test

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/bucket/store"
)

// multipartRecorder is a MultipartLog that keeps what it is told.
type multipartRecorder struct {
	mu     sync.Mutex
	events []string
}

func (r *multipartRecorder) Started(key, id string) { r.add("start " + key + " " + id) }
func (r *multipartRecorder) Ended(id string)        { r.add("end " + id) }
func (r *multipartRecorder) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

// Every multipart upload the bucket starts — its own, the Uploader's — is
// told to the log, and so is its end: completed, aborted, or unknown to
// the server.
func TestMultipartLogHearsEveryUpload(t *testing.T) {
	rec := &multipartRecorder{}
	cfg := localConfig(serveLocal(t, store.NewMemory()))
	cfg.PartSize, cfg.Multiparts = 100<<10, rec
	b := bucket.NewOSS(cfg)
	ctx := context.Background()

	small, big := bytes.Repeat([]byte("s"), 10<<10), bytes.Repeat([]byte("b"), 350<<10)
	if _, err := b.Put(ctx, bucket.PutRequest{Key: "small", Body: bytes.NewReader(small), Size: int64(len(small))}); err != nil {
		t.Fatal(err)
	}
	if len(rec.events) != 0 {
		t.Fatalf("a PutObject was logged: %v", rec.events)
	}
	if _, err := b.Put(ctx, bucket.PutRequest{Key: "big", Body: bytes.NewReader(big), Size: int64(len(big))}); err != nil {
		t.Fatal(err)
	}
	id1, err := b.StartMultipart(ctx, "streamed", bucket.Attrs{})
	if err != nil {
		t.Fatal(err)
	}
	part, err := b.UploadPart(ctx, "streamed", id1, 1, bytes.NewReader(small), 0, int64(len(small)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.CompleteMultipart(ctx, "streamed", id1, []bucket.Part{part}, bucket.Attrs{}); err != nil {
		t.Fatal(err)
	}
	id2, err := b.StartMultipart(ctx, "given-up", bucket.Attrs{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AbortMultipart(ctx, "given-up", id2); err != nil {
		t.Fatal(err)
	}
	if err := b.AbortMultipart(ctx, "gone", "no-such-upload"); err == nil {
		t.Fatal("abort of an unknown upload succeeded")
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.events) != 7 || !strings.HasPrefix(rec.events[0], "start big ") || rec.events[1] != "end "+strings.TrimPrefix(rec.events[0], "start big ") {
		t.Fatalf("the Uploader's upload: %v", rec.events)
	}
	want := []string{"start streamed " + id1, "end " + id1, "start given-up " + id2, "end " + id2, "end no-such-upload"}
	if got := rec.events[2:]; !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}
