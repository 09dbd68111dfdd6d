// Package store is an OSS-like object store kept in memory or on a local
// directory. It is the one store behind both the in-memory fake bucket used by
// unit tests and the HTTP front of the local server (integration/osslocal), so
// the two cannot drift apart.
//
// Concurrency: every method is safe for concurrent use. Lock order: Store.mu
// only; no I/O on object data is done while it is held except the final
// rename that installs an object.
package store

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
)

// Errors returned by the store. The HTTP front maps each to OSS's error code.
var (
	ErrNoSuchBucket = errors.New("NoSuchBucket")
	ErrNoSuchKey    = errors.New("NoSuchKey")
	ErrExists       = errors.New("FileAlreadyExists")
	ErrNoSuchUpload = errors.New("NoSuchUpload")
	ErrInvalidPart  = errors.New("InvalidPart")
)

// CRCTable is the CRC-64/ECMA table OSS uses for x-oss-hash-crc64ecma.
var CRCTable = crc64.MakeTable(crc64.ECMA)

// Attrs are the settable properties of an object.
type Attrs struct {
	ContentType  string
	Meta         map[string]string // user metadata, keys lower-case without x-oss-meta-
	StorageClass string
	ACL          string
	SSE          string // x-oss-server-side-encryption
	SSEKeyID     string // x-oss-server-side-encryption-key-id
	Tagging      string // x-oss-tagging, URL-encoded
}

// Object describes a stored object.
type Object struct {
	Key          string
	Size         int64
	ETag         string // quoted, as OSS returns it
	CRC64        uint64
	LastModified time.Time
	Attrs
}

// Store holds buckets of objects.
type Store struct {
	blobs blobStore // memory or directory

	mu      sync.Mutex
	buckets map[string]*bucketState // GUARDED_BY(mu)
	now     func() time.Time
}

type bucketState struct {
	objects map[string]*entry     // GUARDED_BY(Store.mu)
	keys    []string              // GUARDED_BY(Store.mu); objects' keys, sorted, for List
	uploads map[string]*multipart // GUARDED_BY(Store.mu)
}

// put adds or replaces an object. LOCKS_REQUIRED(Store.mu)
func (b *bucketState) put(e *entry) {
	if _, ok := b.objects[e.Key]; !ok {
		i, _ := slices.BinarySearch(b.keys, e.Key)
		b.keys = slices.Insert(b.keys, i, e.Key)
	}
	b.objects[e.Key] = e
}

// remove drops an object. LOCKS_REQUIRED(Store.mu)
func (b *bucketState) remove(key string) {
	if i, ok := slices.BinarySearch(b.keys, key); ok {
		b.keys = slices.Delete(b.keys, i, i+1)
	}
	delete(b.objects, key)
}

type entry struct {
	Object
	blobs []blobRef // the body, in order
}

// NewMemory returns a store that keeps everything in memory.
func NewMemory() *Store {
	return &Store{blobs: newMemBlobs(), buckets: map[string]*bucketState{}, now: time.Now}
}

// NewDir returns a store kept durably in root, loading what is already there.
func NewDir(root string) (*Store, error) {
	b, err := newDirBlobs(root)
	if err != nil {
		return nil, err
	}
	s := &Store{blobs: b, buckets: map[string]*bucketState{}, now: time.Now}
	loaded, err := b.load()
	if err != nil {
		return nil, err
	}
	for bucket, objs := range loaded {
		bs := newBucketState()
		for _, e := range objs {
			bs.put(e)
		}
		s.buckets[bucket] = bs
	}
	return s, nil
}

func newBucketState() *bucketState {
	return &bucketState{objects: map[string]*entry{}, uploads: map[string]*multipart{}}
}

// CreateBucket makes an empty bucket; an existing one is kept as it is.
func (s *Store) CreateBucket(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.buckets[name]; ok {
		return nil
	}
	if err := s.blobs.createBucket(name); err != nil {
		return err
	}
	s.buckets[name] = newBucketState()
	return nil
}

// HasBucket reports whether the bucket exists.
func (s *Store) HasBucket(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.buckets[name]
	return ok
}

// bucketLocked returns the bucket. LOCKS_REQUIRED(s.mu)
func (s *Store) bucketLocked(name string) (*bucketState, error) {
	b, ok := s.buckets[name]
	if !ok {
		return nil, ErrNoSuchBucket
	}
	return b, nil
}

// Put stores the content of r as key, replacing any existing object unless
// forbidOverwrite is set.
func (s *Store) Put(bucket, key string, r io.Reader, attrs Attrs, forbidOverwrite bool) (Object, error) {
	if forbidOverwrite {
		if _, err := s.Head(bucket, key); err == nil {
			return Object{}, ErrExists
		}
	}
	if !s.HasBucket(bucket) {
		return Object{}, ErrNoSuchBucket
	}
	w, err := s.blobs.create(bucket)
	if err != nil {
		return Object{}, err
	}
	md := md5.New()
	crc := crc64.New(CRCTable)
	n, err := io.Copy(io.MultiWriter(w, md, crc), r)
	if err != nil {
		w.abort()
		return Object{}, err
	}
	blob, err := w.commit()
	if err != nil {
		return Object{}, err
	}
	obj := Object{Key: key, Size: n, ETag: `"` + strings.ToUpper(hex.EncodeToString(md.Sum(nil))) + `"`, CRC64: crc.Sum64(), Attrs: attrs}
	return s.install(bucket, obj, []blobRef{{ID: blob, Size: n}}, forbidOverwrite)
}

// install makes blobs the body of obj.Key, replacing any current version.
// On failure the blobs are removed.
func (s *Store) install(bucket string, obj Object, blobs []blobRef, forbidOverwrite bool) (Object, error) {
	obj.Attrs.Meta = cloneMeta(obj.Attrs.Meta)
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := s.bucketLocked(bucket)
	if err == nil {
		if _, ok := b.objects[obj.Key]; ok && forbidOverwrite {
			err = ErrExists
		}
	}
	if err == nil {
		obj.LastModified = s.now().UTC().Truncate(time.Second)
		err = s.blobs.saveRecord(bucket, obj, blobs)
	}
	if err != nil {
		for _, bl := range blobs {
			s.blobs.remove(bucket, bl.ID)
		}
		return Object{}, err
	}
	if old, ok := b.objects[obj.Key]; ok {
		for _, bl := range old.blobs {
			s.blobs.remove(bucket, bl.ID)
		}
	}
	b.put(&entry{Object: obj, blobs: blobs})
	return obj, nil
}

// Head returns the object's description.
func (s *Store) Head(bucket, key string) (Object, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := s.bucketLocked(bucket)
	if err != nil {
		return Object{}, err
	}
	e, ok := b.objects[key]
	if !ok {
		return Object{}, ErrNoSuchKey
	}
	o := e.Object
	o.Meta = cloneMeta(o.Meta)
	return o, nil
}

// Body is an open object's bytes, read in order or at any offset.
type Body interface {
	io.ReadCloser
	io.ReaderAt
}

// Open returns the object and its length bytes from off (length < 0: to
// the end). The caller closes the body.
func (s *Store) Open(bucket, key string, off, length int64) (Object, Body, error) {
	s.mu.Lock()
	b, err := s.bucketLocked(bucket)
	if err != nil {
		s.mu.Unlock()
		return Object{}, nil, err
	}
	e, ok := b.objects[key]
	if !ok {
		s.mu.Unlock()
		return Object{}, nil, ErrNoSuchKey
	}
	obj := e.Object
	obj.Meta = cloneMeta(obj.Meta)
	// Open while locked so a concurrent replace cannot remove the blobs
	// first; an open file (or byte slice) stays readable after removal.
	r, err := s.openBlobs(bucket, e.blobs)
	s.mu.Unlock()
	if err != nil {
		return Object{}, nil, err
	}
	if off > obj.Size {
		off = obj.Size
	}
	if length < 0 || off+length > obj.Size {
		length = obj.Size - off
	}
	return obj, readCloser{io.NewSectionReader(r, off, length), r}, nil
}

// openBlobs opens an object's blobs as one body. LOCKS_REQUIRED(s.mu)
func (s *Store) openBlobs(bucket string, blobs []blobRef) (readerAtCloser, error) {
	var m multiBlob
	for _, b := range blobs {
		r, err := s.blobs.open(bucket, b.ID)
		if err != nil {
			m.Close()
			return nil, err
		}
		m.parts = append(m.parts, r)
		m.sizes = append(m.sizes, b.Size)
	}
	return &m, nil
}

// multiBlob reads blobs one after the other.
type multiBlob struct {
	parts []readerAtCloser
	sizes []int64
}

func (m *multiBlob) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for i, r := range m.parts {
		if off >= m.sizes[i] {
			off -= m.sizes[i]
			continue
		}
		want := min(int64(len(p)-n), m.sizes[i]-off)
		got, err := r.ReadAt(p[n:n+int(want)], off)
		n += got
		if err != nil && !(err == io.EOF && int64(got) == want) {
			return n, err
		}
		off = 0
		if n == len(p) {
			return n, nil
		}
	}
	return n, io.EOF
}

func (m *multiBlob) Close() error {
	for _, r := range m.parts {
		r.Close()
	}
	return nil
}

type readCloser struct {
	*io.SectionReader
	io.Closer
}

// Delete removes the object; a missing object is not an error.
func (s *Store) Delete(bucket, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := s.bucketLocked(bucket)
	if err != nil {
		return err
	}
	if e, ok := b.objects[key]; ok {
		if err := s.blobs.deleteRecord(bucket, key); err != nil {
			return err
		}
		for _, bl := range e.blobs {
			s.blobs.remove(bucket, bl.ID)
		}
		b.remove(key)
	}
	return nil
}

// Copy copies src to dst. With attrs nil the source's attributes are kept
// (metadata directive COPY), otherwise they are replaced.
func (s *Store) Copy(srcBucket, srcKey, dstBucket, dstKey string, attrs *Attrs, forbidOverwrite bool) (Object, error) {
	src, r, err := s.Open(srcBucket, srcKey, 0, -1)
	if err != nil {
		return Object{}, err
	}
	defer r.Close()
	a := src.Attrs
	if attrs != nil {
		a = *attrs
	}
	return s.Put(dstBucket, dstKey, r, a, forbidOverwrite)
}

// ListRequest is one page of a listing.
type ListRequest struct {
	Prefix, Delimiter, StartAfter string
	MaxKeys                       int
}

// ListResult is one page of a listing. Next is the last key or prefix
// returned when the page is truncated.
type ListResult struct {
	Objects   []Object
	Prefixes  []string
	Truncated bool
	Next      string
}

// List returns keys after StartAfter in lexical order, rolling keys that
// contain Delimiter after Prefix into common prefixes.
func (s *Store) List(bucket string, req ListRequest) (ListResult, error) {
	if req.MaxKeys <= 0 || req.MaxKeys > 1000 {
		req.MaxKeys = 1000
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := s.bucketLocked(bucket)
	if err != nil {
		return ListResult{}, err
	}
	// The keys after StartAfter that start with Prefix, in order: a real
	// server's listing costs a page, not a pass over the bucket (the bench
	// lists a bucket of tens of thousands of objects).
	from, _ := slices.BinarySearch(b.keys, max(req.Prefix, req.StartAfter+"\x00"))
	var res ListResult
	count := 0
	for i := from; i < len(b.keys); i++ {
		k := b.keys[i]
		if !strings.HasPrefix(k, req.Prefix) {
			break
		}
		entryName := k
		isPrefix := false
		if req.Delimiter != "" {
			if i := strings.Index(k[len(req.Prefix):], req.Delimiter); i >= 0 {
				entryName = k[:len(req.Prefix)+i+len(req.Delimiter)]
				isPrefix = true
			}
		}
		if isPrefix && len(res.Prefixes) > 0 && res.Prefixes[len(res.Prefixes)-1] == entryName {
			// Past the rest of this prefix at once.
			j, _ := slices.BinarySearch(b.keys[i:], entryName+"\U0010FFFF")
			i += j - 1
			continue
		}
		if count == req.MaxKeys {
			res.Truncated = true
			break
		}
		count++
		if isPrefix {
			res.Prefixes = append(res.Prefixes, entryName)
			// Skip the rest of this prefix on later pages too.
			res.Next = entryName + "\U0010FFFF"
		} else {
			o := b.objects[k].Object
			o.Meta = cloneMeta(o.Meta)
			res.Objects = append(res.Objects, o)
			res.Next = k
		}
	}
	if !res.Truncated {
		res.Next = ""
	}
	return res, nil
}

func cloneMeta(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func newID() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return strings.ToUpper(hex.EncodeToString(b[:]))
}
