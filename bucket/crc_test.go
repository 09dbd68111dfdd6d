package bucket_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/bucket/store"
	"github.com/ossmount/ossmount/integration/osslocal"
)

// Uploads are checked against the CRC-64 the server reports (crc.go): a
// request whose reported CRC is wrong once is sent again and succeeds,
// one that is always wrong fails with ErrIntegrity — also a completion,
// which must not be sent again (the upload is gone by then).
func TestUploadCRCChecked(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, 350<<10) // 4 parts of 100 KiB
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	small := data[:5000]
	putSmall := func(b bucket.Bucket) error {
		_, err := b.Put(context.Background(), bucket.PutRequest{Key: "k", Body: bytes.NewReader(small), Size: int64(len(small))})
		return err
	}
	putBig := func(b bucket.Bucket) error {
		_, err := b.Put(context.Background(), bucket.PutRequest{Key: "k", Body: bytes.NewReader(data), Size: int64(len(data))})
		return err
	}
	streamed := func(b bucket.Bucket) error {
		ctx := context.Background()
		id, err := b.StartMultipart(ctx, "k", bucket.Attrs{})
		if err != nil {
			return err
		}
		var parts []bucket.Part
		for i, off := 1, int64(0); off < int64(len(data)); i, off = i+1, off+100<<10 {
			p, err := b.UploadPart(ctx, "k", id, i, bytes.NewReader(data), off, min(100<<10, int64(len(data))-off))
			if err != nil {
				return err
			}
			parts = append(parts, p)
		}
		_, err = b.CompleteMultipart(ctx, "k", id, parts, bucket.Attrs{})
		return err
	}
	for _, c := range []struct {
		name   string
		upload func(bucket.Bucket) error
		want   []byte
		op     string
		count  int
		fails  bool
	}{
		{"put once", putSmall, small, "PutObject", 1, false},
		{"put always", putSmall, small, "PutObject", 0, true},
		{"uploader part once", putBig, data, "UploadPart", 1, false},
		{"uploader part always", putBig, data, "UploadPart", 0, true},
		{"uploader completion", putBig, data, "CompleteMultipartUpload", 0, true},
		{"streamed part once", streamed, data, "UploadPart", 1, false},
		{"streamed part always", streamed, data, "UploadPart", 0, true},
		{"streamed completion", streamed, data, "CompleteMultipartUpload", 0, true},
		{"no fault", putBig, data, "", -1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var faults []osslocal.Fault
			if c.count >= 0 {
				faults = append(faults, osslocal.Fault{Op: c.op, BadCRC: true, Count: c.count})
			}
			cfg := localConfig(serveLocal(t, store.NewMemory(), faults...))
			cfg.PartSize, cfg.RetryMaxAttempts = 100<<10, 2
			b := bucket.NewOSS(cfg)
			err := c.upload(b)
			if c.fails {
				if !errors.Is(err, bucket.ErrIntegrity) {
					t.Fatalf("got %v, want ErrIntegrity", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := get(t, b, "k", 0, -1); !bytes.Equal(got, c.want) {
				t.Fatalf("object holds %d bytes, not the %d uploaded", len(got), len(c.want))
			}
		})
	}
}
