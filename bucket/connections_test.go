package bucket_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/bucket/store"
	"github.com/ossmount/ossmount/integration/osslocal"
)

// Write-back runs 16 uploads at once: rounds of them must go over the
// connections the first round opened, not dial (and, with TLS, shake
// hands) anew for every request past the SDK's ten idle connections.
func TestConcurrentRequestsReuseConnections(t *testing.T) {
	s := store.NewMemory()
	if err := s.CreateBucket("test-bucket"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(osslocal.New(osslocal.Config{Store: s, Keys: map[string]string{"id": "secret"}}))
	var dialled atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			dialled.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	b := bucket.NewOSS(localConfig(srv.URL))

	const inFlight, rounds = 32, 4
	for round := range rounds {
		var wg sync.WaitGroup
		for i := range inFlight {
			wg.Go(func() {
				data := bytes.Repeat([]byte{byte(i)}, 1000)
				_, err := b.Put(context.Background(), bucket.PutRequest{Key: "k", Body: bytes.NewReader(data), Size: int64(len(data))})
				if err != nil {
					t.Errorf("round %d: put: %v", round, err)
				}
			})
		}
		wg.Wait()
	}
	if n := dialled.Load(); n > inFlight {
		t.Errorf("%d rounds of %d requests at once opened %d connections, want at most %d", rounds, inFlight, n, inFlight)
	}
}
