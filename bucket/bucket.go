// Package bucket is the narrow interface the rest of ossmount uses to talk to
// OSS, its implementation over the official SDK (oss.go), and an in-memory
// fake over the same store as the local server (fake.go).
//
// Only this package imports the OSS SDK; errors.go is the only code that
// inspects SDK errors.
package bucket

import (
	"context"
	"io"
	"time"
)

// ObjectInfo describes an object.
type ObjectInfo struct {
	Key          string
	Size         int64
	ETag         string
	LastModified time.Time
	ContentType  string
	// Meta is the user metadata (x-oss-meta-NAME) keyed by lower-case NAME.
	// Listings do not carry it (nil).
	Meta map[string]string
	// CRC64 is the content's CRC-64/ECMA (x-oss-hash-crc64ecma) from a
	// HEAD; 0 when the server sent none.
	CRC64 uint64
}

// Attrs are what an upload or a metadata-replacing copy sets on an object.
type Attrs struct {
	ContentType     string
	Meta            map[string]string
	StorageClass    string // x-oss-storage-class; empty: the bucket's default
	ACL             string // x-oss-object-acl; empty: inherit
	ForbidOverwrite bool   // x-oss-forbid-overwrite: true
}

// PutRequest uploads Size bytes of Body as Key. Body is read from offset 0
// and may be read more than once (retries, parallel parts).
type PutRequest struct {
	Key   string
	Body  io.ReaderAt
	Size  int64
	Attrs Attrs
	// Progress, if set, is told the bytes sent so far of a multipart
	// upload, as its parts finish.
	Progress func(sent int64)
}

// PutResult is what the server returned for a completed upload.
type PutResult struct {
	ETag      string
	RequestID string
}

// ListRequest asks for one page of keys under Prefix.
type ListRequest struct {
	Prefix            string
	Delimiter         string
	ContinuationToken string
	MaxKeys           int // 0: the server's default
}

// ListPage is one page of a listing.
type ListPage struct {
	Objects  []ObjectInfo
	Prefixes []string // common prefixes, each ending with the delimiter
	// NextToken is empty on the last page.
	NextToken string
}

// Part is an uploaded part of a multipart upload.
type Part struct {
	Number int
	Size   int64
	ETag   string
	CRC64  uint64
}

// Multipart is the multipart upload API, for uploads that start before
// the whole body is known. A started upload must be completed or aborted.
type Multipart interface {
	// StartMultipart begins an upload of key with attrs
	// (InitiateMultipartUpload; the ACL is sent at completion).
	StartMultipart(ctx context.Context, key string, attrs Attrs) (uploadID string, err error)
	// UploadPart sends size bytes of body from off as part number (1-based).
	UploadPart(ctx context.Context, key, uploadID string, number int, body io.ReaderAt, off, size int64) (Part, error)
	// CompleteMultipart joins the parts in order. The CRC64 the server
	// returns is checked against the parts'.
	CompleteMultipart(ctx context.Context, key, uploadID string, parts []Part, attrs Attrs) (PutResult, error)
	// AbortMultipart drops the upload and its parts.
	AbortMultipart(ctx context.Context, key, uploadID string) error
	// CopyPart makes part number of the upload from src's bytes on the
	// server (UploadPartCopy), from the version src.ETag only (another
	// one: ErrChanged). The part's CRC64, if the server returns one, must
	// be src.CRC64, the sum of the bytes the caller holds for that range
	// (otherwise: ErrIntegrity); CompleteMultipart checks the whole. With
	// src.Unsummed the caller holds none of them: the part's CRC64 is the
	// server's (0 if it returns none), and the caller checks it.
	CopyPart(ctx context.Context, key, uploadID string, number int, src CopySource) (Part, error)
}

// CopySource is a byte range of a version of an object, for CopyPart.
type CopySource struct {
	Key, ETag string
	Off, Size int64
	CRC64     uint64
	Unsummed  bool
}

// GetRequest asks for Length bytes of Key from Off (Length < 0: to the
// end), of the version whose ETag is IfMatch if set.
type GetRequest struct {
	Key         string
	Off, Length int64
	IfMatch     string
}

// Body is the bytes Get read, the ETag of the version they are from, and
// that version's size (ETag "" and Size -1 when there were none to read).
type Body struct {
	io.ReadCloser
	ETag string
	Size int64
}

// Bucket is one bucket. Every method is safe for concurrent use. Errors wrap
// the sentinels of errors.go; a missing object is ErrNotFound.
type Bucket interface {
	// Name is the bucket's name, for messages.
	Name() string
	// Head returns the object's description with its metadata (HeadObject).
	Head(ctx context.Context, key string) (ObjectInfo, error)
	// Get reads req.Length bytes from req.Off (GetObject with a Range
	// header); fewer if the object ends before, none if it ends before
	// Off. With IfMatch, only from the version with that ETag: another is
	// ErrChanged. The caller closes the body.
	Get(ctx context.Context, req GetRequest) (Body, error)
	// Put uploads an object: PutObject, or a multipart upload through the
	// SDK's Uploader for large bodies. The server's CRC64 is verified.
	Put(ctx context.Context, req PutRequest) (PutResult, error)
	// List returns one page (ListObjectsV2).
	List(ctx context.Context, req ListRequest) (ListPage, error)
	// Delete removes an object; a missing object is not an error.
	Delete(ctx context.Context, key string) error
	// DeleteMany removes objects, up to a thousand a request
	// (DeleteMultipleObjects); missing objects are not an error.
	DeleteMany(ctx context.Context, keys []string) error
	// Copy copies an object within the bucket (CopyObject, or a multipart
	// copy through the SDK's Copier for large objects).
	Copy(ctx context.Context, req CopyRequest) error

	Multipart
}

// CopyRequest copies Src to Dst. Attrs nil keeps the source's metadata;
// otherwise it replaces it (x-oss-metadata-directive: REPLACE).
type CopyRequest struct {
	Src, Dst string
	// Size of Src if known, else -1: a known small size saves the HEAD the
	// SDK's Copier makes to choose between a simple and a multipart copy.
	Size  int64
	Attrs *Attrs
}
