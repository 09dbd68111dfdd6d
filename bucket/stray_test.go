package bucket

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/ossmount/ossmount/bucket/store"
	"github.com/ossmount/ossmount/integration/osslocal"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A request that fails with context.Canceled while its own context is live
// (net/http closed its connection for another request's cancellation) is
// tried again, and if it keeps failing so it is a transient failure (EIO),
// not an interruption (EINTR); a request whose context is cancelled is not
// tried again, and says so.
func TestStrayCancelIsRetried(t *testing.T) {
	s := store.NewMemory()
	if err := s.CreateBucket("test-bucket"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(osslocal.New(osslocal.Config{Store: s, Keys: map[string]string{"id": "secret"}}))
	t.Cleanup(srv.Close)
	var sent, stray atomic.Int32 // requests sent, and how many to fail
	cfg := Config{Bucket: "test-bucket", Endpoint: srv.URL, Region: "local", PathStyle: true, RetryMaxAttempts: 3,
		Credentials: &Credentials{AccessKeyID: "id", AccessKeySecret: "secret"},
		wrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				sent.Add(1)
				if stray.Add(-1) >= 0 {
					if r.Body != nil {
						r.Body.Close()
					}
					return nil, context.Canceled
				}
				return rt.RoundTrip(r)
			})
		}}
	b := NewOSS(cfg)
	data := []byte("acknowledged bytes")
	put := func(ctx context.Context) error {
		_, err := b.Put(ctx, PutRequest{Key: "k", Body: bytes.NewReader(data), Size: int64(len(data))})
		return err
	}

	stray.Store(1)
	if err := put(context.Background()); err != nil {
		t.Fatalf("put after one stray cancellation: %v", err)
	}
	_, body, err := s.Open("test-bucket", "k", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(body)
	body.Close()
	if !bytes.Equal(got, data) || sent.Load() != 2 {
		t.Fatalf("stored %q after %d requests, want %q after 2", got, sent.Load(), data)
	}

	stray.Store(100)
	if err := put(context.Background()); !errors.Is(err, ErrTransient) {
		t.Fatalf("put failing with stray cancellations only: %v, want ErrTransient", err)
	}

	stray.Store(0)
	sent.Store(0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := put(ctx); !errors.Is(err, context.Canceled) || sent.Load() > 1 {
		t.Fatalf("put with a cancelled context: %v after %d requests, want context.Canceled after at most 1", err, sent.Load())
	}
}
