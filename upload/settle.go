package upload

import (
	"context"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/cache"
)

// SettleFirst wraps b for a write-back mount: before a key changes in the
// bucket (put, copy onto it, delete), the journal records of that key
// removed without an fsync are made durably gone, so that no crash can
// replay an older upload over the change (cache.Journal.Settle).
func SettleFirst(b bucket.Bucket, j *cache.Journal) bucket.Bucket {
	return settling{Bucket: b, journal: j}
}

type settling struct {
	bucket.Bucket
	journal *cache.Journal
}

func (s settling) Put(ctx context.Context, req bucket.PutRequest) (bucket.PutResult, error) {
	if err := s.journal.Settle(req.Key); err != nil {
		return bucket.PutResult{}, err
	}
	return s.Bucket.Put(ctx, req)
}

func (s settling) CompleteMultipart(ctx context.Context, key, uploadID string, parts []bucket.Part, attrs bucket.Attrs) (bucket.PutResult, error) {
	if err := s.journal.Settle(key); err != nil {
		return bucket.PutResult{}, err
	}
	return s.Bucket.CompleteMultipart(ctx, key, uploadID, parts, attrs)
}

func (s settling) Delete(ctx context.Context, key string) error {
	if err := s.journal.Settle(key); err != nil {
		return err
	}
	return s.Bucket.Delete(ctx, key)
}

func (s settling) DeleteMany(ctx context.Context, keys []string) error {
	for _, k := range keys {
		if err := s.journal.Settle(k); err != nil {
			return err
		}
	}
	return s.Bucket.DeleteMany(ctx, keys)
}

func (s settling) Copy(ctx context.Context, req bucket.CopyRequest) error {
	if err := s.journal.Settle(req.Dst); err != nil {
		return err
	}
	return s.Bucket.Copy(ctx, req)
}
