package bucket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/ossmount/ossmount/bucket/store"
	"github.com/ossmount/ossmount/internal/crc64"
)

// Fake is an in-memory Bucket for unit tests, over the same store as the
// local server. Fail injects errors; Calls counts requests by operation.
type Fake struct {
	store *store.Store
	name  string

	mu    sync.Mutex
	calls map[string]int // GUARDED_BY(mu)
	// fail, when set, is asked before each request; a non-nil error is
	// returned instead of performing it.
	fail func(op, key string) error // GUARDED_BY(mu)
}

var _ Bucket = (*Fake)(nil)

// NewFake returns an empty in-memory bucket.
func NewFake(name string) *Fake {
	s := store.NewMemory()
	if err := s.CreateBucket(name); err != nil {
		panic(err)
	}
	return &Fake{store: s, name: name, calls: map[string]int{}}
}

// SetFail installs a fault hook (nil removes it).
func (f *Fake) SetFail(fn func(op, key string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

// Calls returns how many requests of op were made.
func (f *Fake) Calls(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *Fake) begin(op, key string) error {
	f.mu.Lock()
	f.calls[op]++
	fail := f.fail
	f.mu.Unlock()
	if fail != nil {
		if err := fail(op, key); err != nil {
			return &Error{Op: op, Key: key, Kind: kindOfFake(err), Err: err}
		}
	}
	return nil
}

func kindOfFake(err error) error {
	for _, k := range []error{ErrNotFound, ErrAccessDenied, ErrExists, ErrInvalidName, ErrTransient, ErrRejected, ErrIntegrity} {
		if errors.Is(err, k) {
			return k
		}
	}
	return ErrTransient
}

// storeErr maps store errors to Bucket errors.
func storeErr(op, key string, err error) error {
	if err == nil {
		return nil
	}
	kind := ErrTransient
	switch {
	case errors.Is(err, store.ErrNoSuchKey):
		kind = ErrNotFound
	case errors.Is(err, store.ErrNoSuchBucket):
		kind = ErrNoSuchBucket
	case errors.Is(err, store.ErrExists):
		kind = ErrExists
	}
	return &Error{Op: op, Key: key, Kind: kind, Err: err}
}

func (f *Fake) Name() string { return f.name }

func (f *Fake) Head(_ context.Context, key string) (ObjectInfo, error) {
	if err := f.begin("HeadObject", key); err != nil {
		return ObjectInfo{}, err
	}
	o, err := f.store.Head(f.name, key)
	if err != nil {
		return ObjectInfo{}, storeErr("HeadObject", key, err)
	}
	info := infoOf(o)
	if info.Meta == nil {
		info.Meta = map[string]string{}
	}
	return info, nil
}

func infoOf(o store.Object) ObjectInfo {
	return ObjectInfo{Key: o.Key, Size: o.Size, ETag: o.ETag, LastModified: o.LastModified, ContentType: o.ContentType, Meta: o.Meta, CRC64: o.CRC64}
}

func (f *Fake) Get(_ context.Context, req GetRequest) (Body, error) {
	if err := f.begin("GetObject", req.Key); err != nil {
		return Body{}, err
	}
	o, r, err := f.store.Open(f.name, req.Key, req.Off, req.Length)
	if err != nil {
		return Body{}, storeErr("GetObject", req.Key, err)
	}
	if req.IfMatch != "" && o.ETag != req.IfMatch {
		r.Close()
		return Body{}, &Error{Op: "GetObject", Key: req.Key, Status: 412, Code: "PreconditionFailed", Kind: ErrChanged}
	}
	return Body{ReadCloser: r, ETag: o.ETag, Size: o.Size}, nil
}

func (f *Fake) Put(_ context.Context, req PutRequest) (PutResult, error) {
	if err := f.begin("PutObject", req.Key); err != nil {
		return PutResult{}, err
	}
	o, err := f.store.Put(f.name, req.Key, io.NewSectionReader(req.Body, 0, req.Size), storeAttrs(req.Attrs), req.Attrs.ForbidOverwrite)
	if err != nil {
		return PutResult{}, storeErr("PutObject", req.Key, err)
	}
	return PutResult{ETag: o.ETag}, nil
}

func storeAttrs(a Attrs) store.Attrs {
	return store.Attrs{ContentType: a.ContentType, Meta: a.Meta, StorageClass: a.StorageClass, ACL: a.ACL}
}

func (f *Fake) List(_ context.Context, req ListRequest) (ListPage, error) {
	if err := f.begin("ListObjectsV2", req.Prefix); err != nil {
		return ListPage{}, err
	}
	res, err := f.store.List(f.name, store.ListRequest{Prefix: req.Prefix, Delimiter: req.Delimiter,
		StartAfter: req.ContinuationToken, MaxKeys: req.MaxKeys})
	if err != nil {
		return ListPage{}, storeErr("ListObjectsV2", req.Prefix, err)
	}
	page := ListPage{Prefixes: res.Prefixes, NextToken: res.Next}
	for _, o := range res.Objects {
		info := infoOf(o)
		info.Meta = nil
		page.Objects = append(page.Objects, info)
	}
	return page, nil
}

func (f *Fake) Delete(_ context.Context, key string) error {
	if err := f.begin("DeleteObject", key); err != nil {
		return err
	}
	return storeErr("DeleteObject", key, f.store.Delete(f.name, key))
}

func (f *Fake) DeleteMany(_ context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	if err := f.begin("DeleteMultipleObjects", keys[0]); err != nil {
		return err
	}
	for _, k := range keys {
		if err := f.store.Delete(f.name, k); err != nil {
			return storeErr("DeleteMultipleObjects", k, err)
		}
	}
	return nil
}

func (f *Fake) Copy(_ context.Context, c CopyRequest) error {
	if err := f.begin("CopyObject", c.Dst); err != nil {
		return err
	}
	var sa *store.Attrs
	forbid := false
	if c.Attrs != nil {
		a := storeAttrs(*c.Attrs)
		sa, forbid = &a, c.Attrs.ForbidOverwrite
	}
	_, err := f.store.Copy(f.name, c.Src, f.name, c.Dst, sa, forbid)
	return storeErr("CopyObject", c.Dst, err)
}

func (f *Fake) StartMultipart(_ context.Context, key string, attrs Attrs) (string, error) {
	if err := f.begin("InitiateMultipartUpload", key); err != nil {
		return "", err
	}
	id, err := f.store.InitiateMultipart(f.name, key, storeAttrs(attrs))
	return id, storeErr("InitiateMultipartUpload", key, err)
}

func (f *Fake) UploadPart(_ context.Context, key, uploadID string, number int, body io.ReaderAt, off, size int64) (Part, error) {
	if err := f.begin("UploadPart", key); err != nil {
		return Part{}, err
	}
	p, err := f.store.UploadPart(f.name, uploadID, number, io.NewSectionReader(body, off, size))
	if err != nil {
		return Part{}, storeErr("UploadPart", key, err)
	}
	return Part{Number: number, Size: p.Size, ETag: p.ETag, CRC64: p.CRC64}, nil
}

func (f *Fake) CompleteMultipart(_ context.Context, key, uploadID string, parts []Part, attrs Attrs) (PutResult, error) {
	if err := f.begin("CompleteMultipartUpload", key); err != nil {
		return PutResult{}, err
	}
	var infos []store.PartInfo
	for _, p := range parts {
		infos = append(infos, store.PartInfo{Number: p.Number, ETag: p.ETag})
	}
	o, err := f.store.CompleteMultipart(f.name, uploadID, infos, attrs.ACL, attrs.ForbidOverwrite)
	if err != nil {
		return PutResult{}, storeErr("CompleteMultipartUpload", key, err)
	}
	// As OSS.CompleteMultipart checks the server's sum against the parts'.
	var crc uint64
	for _, p := range parts {
		crc = crc64.Combine(crc, p.CRC64, p.Size)
	}
	if crc != o.CRC64 {
		return PutResult{}, &Error{Op: "CompleteMultipartUpload", Key: key, Kind: ErrIntegrity, Err: fmt.Errorf("object's CRC64 %d, the parts' %d", o.CRC64, crc)}
	}
	return PutResult{ETag: o.ETag}, nil
}

func (f *Fake) CopyPart(_ context.Context, key, uploadID string, number int, src CopySource) (Part, error) {
	if err := f.begin("UploadPartCopy", key); err != nil {
		return Part{}, err
	}
	o, r, err := f.store.Open(f.name, src.Key, src.Off, src.Size)
	if err != nil {
		return Part{}, storeErr("UploadPartCopy", key, err)
	}
	defer r.Close()
	if o.ETag != src.ETag {
		return Part{}, &Error{Op: "UploadPartCopy", Key: key, Status: 412, Code: "PreconditionFailed", Kind: ErrChanged}
	}
	p, err := f.store.UploadPart(f.name, uploadID, number, r)
	if err != nil {
		return Part{}, storeErr("UploadPartCopy", key, err)
	}
	if p.CRC64 != src.CRC64 && !src.Unsummed {
		return Part{}, &Error{Op: "UploadPartCopy", Key: key, Kind: ErrIntegrity, Err: fmt.Errorf("copied part's CRC64 %d, want %d", p.CRC64, src.CRC64)}
	}
	return Part{Number: number, Size: p.Size, ETag: p.ETag, CRC64: p.CRC64}, nil
}

func (f *Fake) AbortMultipart(_ context.Context, key, uploadID string) error {
	if err := f.begin("AbortMultipartUpload", key); err != nil {
		return err
	}
	return storeErr("AbortMultipartUpload", key, f.store.AbortMultipart(f.name, uploadID))
}
