package upload

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"

	"github.com/ossmount/ossmount/bucket"
)

// claims is a body that says which of its ranges the object "src" holds
// (cache.Staging's Unchanged), rightly or not.
type claims struct {
	*bytes.Reader
	etag string
}

func (c claims) Unchanged(off, end int64) (string, string, bool) { return "src", c.etag, true }

func objectOf(t *testing.T, b *bucket.Fake, key string) []byte {
	t.Helper()
	body, err := b.Get(context.Background(), bucket.GetRequest{Key: key, Length: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	data, _ := io.ReadAll(body)
	return data
}

// A body that claims ranges the object does not hold (a mistake in what a
// staging file remembers) costs a fallback, never a wrong object: the
// copied parts' sums differ from the body's, and the whole body is sent.
// A body whose claims hold is copied.
func TestCopyingUploadFallsBackOnWrongClaims(t *testing.T) {
	ctx := context.Background()
	b := bucket.NewFake("test-bucket")
	u := New(b, Config{PartSize: 100 << 10}, slog.New(slog.DiscardHandler))
	src := make([]byte, 450<<10)
	rand.NewChaCha8([32]byte{1}).Read(src)
	res, err := b.Put(ctx, bucket.PutRequest{Key: "src", Body: bytes.NewReader(src), Size: int64(len(src))})
	if err != nil {
		t.Fatal(err)
	}

	right := claims{bytes.NewReader(src), res.ETag}
	if err := u.Put(ctx, "copy", right, int64(len(src)), Metadata{}); err != nil {
		t.Fatal(err)
	}
	if got := objectOf(t, b, "copy"); !bytes.Equal(got, src) {
		t.Fatal("a copied object differs")
	}
	if n := b.Calls("UploadPartCopy"); n != 5 {
		t.Fatalf("%d parts copied, want 5", n)
	}

	edited := append([]byte(nil), src...)
	copy(edited[150<<10:], "not in the object")
	wrong := claims{bytes.NewReader(edited), res.ETag}
	if err := u.Put(ctx, "edited", wrong, int64(len(edited)), Metadata{}); err != nil {
		t.Fatal(err)
	}
	if got := objectOf(t, b, "edited"); !bytes.Equal(got, edited) {
		t.Fatal("an upload of wrong claims stored other bytes than the body's")
	}
	if n := b.Calls("PutObject"); n != 2 { // src's, and the fallback's
		t.Fatalf("%d PutObject calls, want the fallback's", n-1)
	}
	if n, m := b.Calls("AbortMultipartUpload"), b.Calls("CompleteMultipartUpload"); n != 1 || m != 1 {
		t.Fatalf("%d aborts and %d completions, want 1 and 1", n, m)
	}
}
