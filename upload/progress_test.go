package upload

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ossmount/ossmount/bucket"
)

// steppedBucket reports a whole upload's progress a MiB at a time, each
// step taking a tick of the clock.
type steppedBucket struct {
	bucket.Bucket
	tick func()
}

func (b *steppedBucket) Put(ctx context.Context, req bucket.PutRequest) (bucket.PutResult, error) {
	for sent := int64(1 << 20); sent <= req.Size && req.Progress != nil; sent += 1 << 20 {
		b.tick()
		req.Progress(sent)
	}
	return b.Bucket.Put(ctx, req)
}

// DESIGN §7: a long upload logs its progress. A whole file's did not — a
// big file written in write-back mode, or at random, went up in silence
// for as long as it took; only a stream logged.
func TestLongUploadLogsProgress(t *testing.T) {
	clock := time.Unix(1_700_000_000, 0)
	b := &steppedBucket{Bucket: bucket.NewFake("test-bucket"), tick: func() { clock = clock.Add(2 * time.Second) }}
	logs := &logBuffer{}
	u := New(b, Config{}, slog.New(slog.NewTextHandler(logs, nil)))
	u.now = func() time.Time { return clock }
	data := make([]byte, 10<<20)
	if err := u.Put(context.Background(), "big", bytes.NewReader(data), int64(len(data)), Metadata{}); err != nil {
		t.Fatal(err)
	}
	// 20 s in steps of 2 s: a line at 6, 12 and 18 s (every 5 s at most).
	lines := logs.lines("msg=uploading key=big")
	if len(lines) != 3 || !strings.Contains(lines[2], `sent="9.0 MiB" of="10 MiB"`) {
		t.Fatalf("progress lines:\n%s", strings.Join(lines, "\n"))
	}
}
