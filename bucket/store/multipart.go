package store

import (
	"crypto/md5"
	"encoding/hex"
	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
	"hash/crc64"
	"io"
	"sort"
	"strconv"
	"strings"
)

// Multipart uploads are kept in memory (parts as bodies in the blob store):
// an upload in progress does not survive a restart of the server, as it
// would not survive an expired upload on OSS.

type multipart struct {
	key   string
	attrs Attrs
	parts map[int]*part
}

type part struct {
	blob string
	size int64
	etag string
	crc  uint64
}

// PartInfo describes an uploaded part.
type PartInfo struct {
	Number int
	Size   int64
	ETag   string
	CRC64  uint64
}

// InitiateMultipart starts an upload and returns its id.
func (s *Store) InitiateMultipart(bucket, key string, attrs Attrs) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := s.bucketLocked(bucket)
	if err != nil {
		return "", err
	}
	id := newID()
	b.uploads[id] = &multipart{key: key, attrs: attrs, parts: map[int]*part{}}
	return id, nil
}

// Uploads returns the keys of the bucket's uploads neither completed nor
// aborted (ListMultipartUploads), in no order.
func (s *Store) Uploads(bucket string) ([]string, error) {
	return s.uploads(bucket, func(*multipart) bool { return true })
}

// UploadsHoldingParts returns the keys of the uploads Uploads returns that
// hold at least one part.
func (s *Store) UploadsHoldingParts(bucket string) ([]string, error) {
	return s.uploads(bucket, func(u *multipart) bool { return len(u.parts) > 0 })
}

func (s *Store) uploads(bucket string, keep func(*multipart) bool) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := s.bucketLocked(bucket)
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, u := range b.uploads {
		if keep(u) {
			keys = append(keys, u.key)
		}
	}
	return keys, nil
}

func (s *Store) upload(bucket, id string) (*multipart, error) {
	b, err := s.bucketLocked(bucket)
	if err != nil {
		return nil, err
	}
	u, ok := b.uploads[id]
	if !ok {
		return nil, ErrNoSuchUpload
	}
	return u, nil
}

// UploadPart stores part number n of upload id.
func (s *Store) UploadPart(bucket, id string, n int, r io.Reader) (PartInfo, error) {
	s.mu.Lock()
	_, err := s.upload(bucket, id)
	s.mu.Unlock()
	if err != nil {
		return PartInfo{}, err
	}
	w, err := s.blobs.create(bucket)
	if err != nil {
		return PartInfo{}, err
	}
	md := md5.New()
	crc := crc64.New(CRCTable)
	size, err := io.Copy(io.MultiWriter(w, md, crc), r)
	if err != nil {
		w.abort()
		return PartInfo{}, err
	}
	p := &part{size: size, etag: `"` + strings.ToUpper(hex.EncodeToString(md.Sum(nil))) + `"`, crc: crc.Sum64()}
	if p.blob, err = w.commit(); err != nil {
		return PartInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u, err := s.upload(bucket, id)
	if err != nil {
		s.blobs.remove(bucket, p.blob)
		return PartInfo{}, err
	}
	if old, ok := u.parts[n]; ok {
		s.blobs.remove(bucket, old.blob)
	}
	u.parts[n] = p
	return PartInfo{Number: n, Size: size, ETag: p.etag, CRC64: p.crc}, nil
}

// ListParts returns the parts uploaded so far in order.
func (s *Store) ListParts(bucket, id string) (string, []PartInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, err := s.upload(bucket, id)
	if err != nil {
		return "", nil, err
	}
	var out []PartInfo
	for n, p := range u.parts {
		out = append(out, PartInfo{Number: n, Size: p.size, ETag: p.etag, CRC64: p.crc})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return u.key, out, nil
}

// CompleteMultipart joins the listed parts (ascending numbers, etags as
// returned by UploadPart) into the object; a non-empty acl is set on it.
func (s *Store) CompleteMultipart(bucket, id string, parts []PartInfo, acl string, forbidOverwrite bool) (Object, error) {
	s.mu.Lock()
	u, err := s.upload(bucket, id)
	var chosen []*part
	if err == nil {
		for i, want := range parts {
			p, ok := u.parts[want.Number]
			if !ok || (want.ETag != "" && !strings.EqualFold(strings.Trim(want.ETag, `"`), strings.Trim(p.etag, `"`))) ||
				(i > 0 && want.Number <= parts[i-1].Number) {
				err = ErrInvalidPart
				break
			}
			chosen = append(chosen, p)
		}
	}
	s.mu.Unlock()
	if err != nil {
		return Object{}, err
	}
	// As on OSS, completing costs no copy: the object is its parts. The
	// ETag is the MD5 of the parts' MD5s, the CRC the parts' combined.
	md := md5.New()
	var (
		crc   uint64
		size  int64
		blobs []blobRef
		used  = map[string]bool{}
	)
	for _, p := range chosen {
		sum, _ := hex.DecodeString(strings.Trim(p.etag, `"`))
		md.Write(sum)
		crc = oss.CRC64Combine(crc, p.crc, uint64(p.size))
		size += p.size
		blobs = append(blobs, blobRef{ID: p.blob, Size: p.size})
		used[p.blob] = true
	}
	etag := `"` + strings.ToUpper(hex.EncodeToString(md.Sum(nil))) + "-" + strconv.Itoa(len(chosen)) + `"`
	attrs := u.attrs
	if acl != "" {
		attrs.ACL = acl
	}
	obj, err := s.install(bucket, Object{Key: u.key, Size: size, ETag: etag, CRC64: crc, Attrs: attrs}, blobs, forbidOverwrite)
	if err != nil {
		return Object{}, err
	}
	s.dropUpload(bucket, id, used)
	return obj, nil
}

// dropUpload forgets an upload and removes its part blobs but those kept.
func (s *Store) dropUpload(bucket, id string, keep map[string]bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, err := s.upload(bucket, id)
	if err != nil {
		return err
	}
	for _, p := range u.parts {
		if !keep[p.blob] {
			s.blobs.remove(bucket, p.blob)
		}
	}
	delete(s.buckets[bucket].uploads, id)
	return nil
}

// AbortMultipart drops the upload and its parts.
func (s *Store) AbortMultipart(bucket, id string) error { return s.dropUpload(bucket, id, nil) }
