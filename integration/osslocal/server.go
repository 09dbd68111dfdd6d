// Package osslocal is an OSS-compatible HTTP server over bucket/store, for
// `make run`, the integration tests and the benchmarks (DESIGN §8). It
// follows OSS's behaviour, not ossmount's: path-style requests, V4 header
// signatures, OSS's error documents and codes, x-oss-request-id, ETag and
// x-oss-hash-crc64ecma on responses. Faults can be injected (faults.go).
package osslocal

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ossmount/ossmount/bucket/store"
)

// Config configures a Server.
type Config struct {
	Store *store.Store
	// Keys maps access key ids to secrets. Empty: every request is
	// accepted unsigned (anonymous).
	Keys    map[string]string
	Latency time.Duration // added to every request
	Log     *slog.Logger
}

// Server answers OSS requests. It is safe for concurrent use.
type Server struct {
	cfg Config

	mu     sync.Mutex
	faults []*Fault       // GUARDED_BY(mu)
	counts map[string]int // GUARDED_BY(mu)
}

// New returns a server over cfg.Store.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, counts: map[string]int{}}
}

// AddFault injects a failure.
func (s *Server) AddFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// ClearFaults removes every injected failure.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Count returns how many requests of op (e.g. "PutObject") arrived.
func (s *Server) Count(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[op]
}

// Counts returns a copy of all request counts.
func (s *Server) Counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := make(map[string]int, len(s.counts))
	for k, v := range s.counts {
		c[k] = v
	}
	return c
}

var (
	errUnknownKey   = errors.New("InvalidAccessKeyId")
	errBadSignature = errors.New("SignatureDoesNotMatch")
)

// ossError is an error answered with OSS's XML error document.
type ossError struct {
	status        int
	code, message string
}

func (e *ossError) Error() string { return e.code }

func errorFor(err error) *ossError {
	var oe *ossError
	switch {
	case errors.As(err, &oe):
		return oe
	case errors.Is(err, store.ErrNoSuchKey):
		return &ossError{404, "NoSuchKey", "The specified key does not exist."}
	case errors.Is(err, store.ErrNoSuchBucket):
		return &ossError{404, "NoSuchBucket", "The specified bucket does not exist."}
	case errors.Is(err, store.ErrExists):
		return &ossError{409, "FileAlreadyExists", "The object you specified already exists and can not be overwritten."}
	case errors.Is(err, store.ErrNoSuchUpload):
		return &ossError{404, "NoSuchUpload", "The specified upload does not exist."}
	case errors.Is(err, store.ErrInvalidPart):
		return &ossError{400, "InvalidPart", "One or more of the specified parts could not be found."}
	}
	return &ossError{500, "InternalError", err.Error()}
}

// request is one request being answered.
type request struct {
	w         http.ResponseWriter
	r         *http.Request
	bucket    string
	key       string
	query     url.Values
	op        string
	requestID string
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req := &request{w: w, r: r, query: r.URL.Query(), requestID: newRequestID()}
	path := strings.TrimPrefix(r.URL.Path, "/")
	req.bucket, req.key, _ = strings.Cut(path, "/")
	req.op = operation(r.Method, req.key, req.query, r.Header)
	w.Header().Set("x-oss-request-id", req.requestID)
	w.Header().Set("Server", "osslocal")

	s.mu.Lock()
	s.counts[req.op]++
	var fault *Fault
	for _, f := range s.faults {
		if f.match(req.op) {
			fault = f
			break
		}
	}
	s.mu.Unlock()
	if s.cfg.Latency > 0 {
		time.Sleep(s.cfg.Latency)
	}
	if fault != nil && s.injectFault(req, fault) {
		return
	}
	if fault != nil && fault.BadCRC {
		// The request is served, but the CRC64 reported is wrong, as if the
		// bytes had been damaged on the way.
		req.w = &badCRCWriter{ResponseWriter: req.w}
	}
	if fault != nil && fault.CutBody {
		req.w = &cutBodyWriter{ResponseWriter: req.w, onCut: fault.OnCut}
	}
	if fault != nil && fault.LoseReply {
		req.w = &lostReplyWriter{header: http.Header{}}
	}
	s.cfg.Log.Debug("request", "op", req.op, "bucket", req.bucket, "key", req.key)
	err := s.serve(req)
	if err != nil {
		s.writeError(req, errorFor(err))
	}
	if _, lost := req.w.(*lostReplyWriter); lost {
		panic(http.ErrAbortHandler) // served; the connection drops before the reply
	}
}

// lostReplyWriter swallows a reply (Fault.LoseReply).
type lostReplyWriter struct{ header http.Header }

func (w *lostReplyWriter) Header() http.Header         { return w.header }
func (w *lostReplyWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *lostReplyWriter) WriteHeader(int)             {}

// injectFault applies f and reports whether the request was answered.
func (s *Server) injectFault(req *request, f *Fault) bool {
	if f.Before != nil {
		f.Before()
	}
	if f.Stall > 0 {
		select {
		case <-time.After(f.Stall):
		case <-req.r.Context().Done():
			return true
		}
	}
	if f.Cut {
		// Read part of the body, then drop the connection without a response.
		io.CopyN(io.Discard, req.r.Body, req.r.ContentLength/2)
		if hj, ok := req.w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					tc.SetLinger(0)
				}
				conn.Close()
				return true
			}
		}
		panic(http.ErrAbortHandler)
	}
	if f.Status != 0 {
		code := "InternalError"
		switch f.Status {
		case 503:
			code = "SlowDown"
		case 403:
			code = "AccessDenied"
		case 400:
			code = "InvalidArgument"
		case 429:
			code = "TooManyRequests"
		}
		s.writeError(req, &ossError{f.Status, code, "injected fault"})
		return true
	}
	return false
}

type badCRCWriter struct{ http.ResponseWriter }

func (w *badCRCWriter) WriteHeader(status int) {
	if crc := w.Header().Get("x-oss-hash-crc64ecma"); crc != "" {
		w.Header().Set("x-oss-hash-crc64ecma", crc+"1")
	}
	w.ResponseWriter.WriteHeader(status)
}

// cutBodyWriter sends the response up to half its body (Content-Length),
// then drops the connection: the client has its headers and part of the
// body, as when a connection breaks during a download.
type cutBodyWriter struct {
	http.ResponseWriter
	sent  int64
	onCut func()
}

func (w *cutBodyWriter) Write(p []byte) (int, error) {
	length, _ := strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64)
	if half := length / 2; w.sent+int64(len(p)) > half {
		n, _ := w.ResponseWriter.Write(p[:half-w.sent])
		w.sent += int64(n)
		w.ResponseWriter.(http.Flusher).Flush()
		if w.onCut != nil {
			w.onCut()
		}
		panic(http.ErrAbortHandler) // the server closes the connection
	}
	n, err := w.ResponseWriter.Write(p)
	w.sent += int64(n)
	return n, err
}

func operation(method, key string, q url.Values, h http.Header) string {
	has := func(k string) bool { _, ok := q[k]; return ok }
	switch {
	case key == "" && method == "GET" && q.Get("list-type") == "2":
		return "ListObjectsV2"
	case key == "" && method == "GET" && has("bucketInfo"):
		return "GetBucketInfo"
	case key == "" && method == "GET":
		return "ListObjects"
	case key == "" && method == "POST" && has("delete"):
		return "DeleteMultipleObjects"
	case key == "" && method == "PUT":
		return "PutBucket"
	case method == "POST" && has("uploads"):
		return "InitiateMultipartUpload"
	case method == "PUT" && has("uploadId") && h.Get("x-oss-copy-source") != "":
		return "UploadPartCopy"
	case method == "PUT" && has("uploadId"):
		return "UploadPart"
	case method == "POST" && has("uploadId"):
		return "CompleteMultipartUpload"
	case method == "DELETE" && has("uploadId"):
		return "AbortMultipartUpload"
	case method == "GET" && has("uploadId"):
		return "ListParts"
	case method == "PUT" && h.Get("x-oss-copy-source") != "":
		return "CopyObject"
	case method == "PUT":
		return "PutObject"
	case method == "GET":
		return "GetObject"
	case method == "HEAD":
		return "HeadObject"
	case method == "DELETE":
		return "DeleteObject"
	}
	return method
}

func (s *Server) serve(req *request) error {
	if len(s.cfg.Keys) > 0 {
		if err := verifyV4(req.r, req.bucket, req.key, s.cfg.Keys); err != nil {
			switch {
			case errors.Is(err, errUnknownKey):
				return &ossError{403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist in our records."}
			case errors.Is(err, errBadSignature):
				return &ossError{403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided."}
			default:
				return &ossError{403, "AccessDenied", err.Error()}
			}
		}
	}
	if req.bucket == "" {
		return &ossError{400, "InvalidArgument", "listing buckets is not supported"}
	}
	if req.op == "PutBucket" {
		if err := s.cfg.Store.CreateBucket(req.bucket); err != nil {
			return err
		}
		return nil
	}
	if !s.cfg.Store.HasBucket(req.bucket) {
		return store.ErrNoSuchBucket
	}
	if req.key != "" {
		if err := validKey(req.key); err != nil {
			return err
		}
	}
	switch req.op {
	case "ListObjectsV2", "ListObjects":
		return s.list(req)
	case "GetBucketInfo":
		return s.bucketInfo(req)
	case "DeleteMultipleObjects":
		return s.deleteMultiple(req)
	case "PutObject":
		return s.putObject(req)
	case "CopyObject":
		return s.copyObject(req)
	case "GetObject", "HeadObject":
		return s.getObject(req)
	case "DeleteObject":
		if err := s.cfg.Store.Delete(req.bucket, req.key); err != nil {
			return err
		}
		req.w.WriteHeader(http.StatusNoContent)
		return nil
	case "InitiateMultipartUpload":
		return s.initiateMultipart(req)
	case "UploadPart":
		return s.uploadPart(req)
	case "UploadPartCopy":
		return s.uploadPartCopy(req)
	case "CompleteMultipartUpload":
		return s.completeMultipart(req)
	case "AbortMultipartUpload":
		if err := s.cfg.Store.AbortMultipart(req.bucket, req.query.Get("uploadId")); err != nil {
			return err
		}
		req.w.WriteHeader(http.StatusNoContent)
		return nil
	case "ListParts":
		return s.listParts(req)
	}
	return &ossError{400, "InvalidArgument", "unsupported operation"}
}

// validKey applies OSS's object name rules.
func validKey(key string) error {
	if !utf8.ValidString(key) || strings.HasPrefix(key, "/") || strings.HasPrefix(key, `\`) {
		return &ossError{400, "InvalidObjectName", "The specified object is not valid."}
	}
	if len(key) > 1023 {
		return &ossError{400, "InvalidObjectName", "The object name is too long."}
	}
	return nil
}

func attrsFrom(h http.Header) (store.Attrs, error) {
	a := store.Attrs{
		ContentType:  h.Get("Content-Type"),
		StorageClass: h.Get("x-oss-storage-class"),
		ACL:          h.Get("x-oss-object-acl"),
		Meta:         map[string]string{},
		Tagging:      h.Get("x-oss-tagging"),
	}
	if a.ContentType == "" {
		a.ContentType = "application/octet-stream"
	}
	for k, v := range h {
		l := strings.ToLower(k)
		if name, ok := strings.CutPrefix(l, "x-oss-meta-"); ok && len(v) > 0 {
			a.Meta[name] = v[0]
		}
	}
	if err := encryptionFrom(h, &a); err != nil {
		return a, err
	}
	if q, err := url.ParseQuery(a.Tagging); err != nil || len(q) > 10 {
		return a, &ossError{400, "InvalidArgument", "invalid x-oss-tagging"}
	}
	return a, nil
}

// encryptionFrom sets the server-side encryption a request asks for.
func encryptionFrom(h http.Header, a *store.Attrs) error {
	a.SSE, a.SSEKeyID = h.Get("x-oss-server-side-encryption"), h.Get("x-oss-server-side-encryption-key-id")
	switch a.SSE {
	case "", "AES256", "SM4":
		if a.SSEKeyID != "" {
			return &ossError{400, "InvalidArgument", "x-oss-server-side-encryption-key-id needs KMS"}
		}
	case "KMS":
	default:
		return &ossError{400, "InvalidEncryptionAlgorithmError", "The Encryption request you specified is not valid."}
	}
	return nil
}

func forbidOverwrite(h http.Header) bool {
	return strings.EqualFold(h.Get("x-oss-forbid-overwrite"), "true")
}

func (s *Server) putObject(req *request) error {
	attrs, err := attrsFrom(req.r.Header)
	if err != nil {
		return err
	}
	obj, err := s.cfg.Store.Put(req.bucket, req.key, req.r.Body, attrs, forbidOverwrite(req.r.Header))
	if err != nil {
		return err
	}
	s.cfg.Log.Debug("put", "bucket", req.bucket, "key", req.key, "size", obj.Size)
	setObjectHeaders(req.w.Header(), obj, false)
	req.w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) copySource(req *request) (bucket, key string, err error) {
	src := strings.TrimPrefix(req.r.Header.Get("x-oss-copy-source"), "/")
	src, _, _ = strings.Cut(src, "?")
	bucket, encKey, _ := strings.Cut(src, "/")
	key, err = url.PathUnescape(encKey)
	if err != nil || validKey(key) != nil {
		return "", "", &ossError{400, "InvalidArgument", "invalid x-oss-copy-source"}
	}
	return bucket, key, nil
}

func (s *Server) copyObject(req *request) error {
	srcBucket, srcKey, err := s.copySource(req)
	if err != nil {
		return err
	}
	// The copy keeps the source's metadata and tags unless the directives
	// say REPLACE; its encryption is what this request asks for.
	src, err := s.cfg.Store.Head(srcBucket, srcKey)
	if err != nil {
		return err
	}
	h := req.r.Header
	attrs := src.Attrs
	if strings.EqualFold(h.Get("x-oss-metadata-directive"), "REPLACE") {
		if attrs, err = attrsFrom(h); err != nil {
			return err
		}
		attrs.Tagging = src.Tagging
	} else if err := encryptionFrom(h, &attrs); err != nil {
		return err
	}
	if strings.EqualFold(h.Get("x-oss-tagging-directive"), "REPLACE") {
		attrs.Tagging = h.Get("x-oss-tagging")
	}
	obj, err := s.cfg.Store.Copy(srcBucket, srcKey, req.bucket, req.key, &attrs, forbidOverwrite(h))
	if err != nil {
		return err
	}
	req.w.Header().Set("x-oss-hash-crc64ecma", strconv.FormatUint(obj.CRC64, 10))
	return writeXML(req.w, http.StatusOK, copyObjectResult{ETag: obj.ETag, LastModified: isoTime(obj.LastModified)})
}

func setObjectHeaders(h http.Header, obj store.Object, full bool) {
	h.Set("ETag", obj.ETag)
	h.Set("x-oss-hash-crc64ecma", strconv.FormatUint(obj.CRC64, 10))
	if !full {
		return
	}
	h.Set("Last-Modified", obj.LastModified.Format(http.TimeFormat))
	h.Set("Content-Type", obj.ContentType)
	h.Set("x-oss-object-type", "Normal")
	class := obj.StorageClass
	if class == "" {
		class = "Standard"
	}
	h.Set("x-oss-storage-class", class)
	h.Set("Accept-Ranges", "bytes")
	if obj.SSE != "" {
		h.Set("x-oss-server-side-encryption", obj.SSE)
	}
	if obj.SSEKeyID != "" {
		h.Set("x-oss-server-side-encryption-key-id", obj.SSEKeyID)
	}
	if q, _ := url.ParseQuery(obj.Tagging); len(q) > 0 {
		h.Set("x-oss-tagging-count", strconv.Itoa(len(q)))
	}
	for k, v := range obj.Meta {
		h.Set("x-oss-meta-"+k, v)
	}
}

// errPreconditionFailed answers a request whose If-Match names another
// version than the object's.
var errPreconditionFailed = &ossError{412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold."}

func (s *Server) getObject(req *request) error {
	// One version answers: its headers, its bytes (Open's body reads at
	// any offset).
	obj, whole, err := s.cfg.Store.Open(req.bucket, req.key, 0, -1)
	if err != nil {
		return err
	}
	defer whole.Close()
	if etag := req.r.Header.Get("If-Match"); etag != "" && etag != obj.ETag {
		return errPreconditionFailed
	}
	standard := strings.EqualFold(req.r.Header.Get("x-oss-range-behavior"), "standard")
	off, length, partial, err := parseRange(req.r.Header.Get("Range"), obj.Size, standard)
	if err != nil {
		return err
	}
	h := req.w.Header()
	setObjectHeaders(h, obj, true)
	if req.op == "HeadObject" {
		h.Set("Content-Length", strconv.FormatInt(obj.Size, 10))
		req.w.WriteHeader(http.StatusOK)
		return nil
	}
	body := io.NewSectionReader(whole, off, length)
	status := http.StatusOK
	if partial {
		status = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+length-1, obj.Size))
		h.Del("x-oss-hash-crc64ecma") // the CRC is of the whole object
	}
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	req.w.WriteHeader(status)
	io.Copy(req.w, body)
	return nil
}

// errInvalidRange answers a range that starts past the object's end, with
// x-oss-range-behavior: standard.
var errInvalidRange = &ossError{416, "InvalidRange", "The requested range cannot be satisfied."}

// parseRange reads "bytes=a-b", "bytes=a-" or "bytes=-n". As OSS does, an
// invalid or unsatisfiable range is ignored and the whole object returned —
// unless standard (x-oss-range-behavior: standard): then a range starting
// past the end is refused (416).
func parseRange(h string, size int64, standard bool) (off, length int64, partial bool, err error) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, size, false, nil
	}
	a, b, _ := strings.Cut(spec, "-")
	switch {
	case a == "":
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 {
			return 0, size, false, nil
		}
		if n > size {
			n = size
		}
		return size - n, n, true, nil
	default:
		start, err := strconv.ParseInt(a, 10, 64)
		if err == nil && start >= size && standard {
			return 0, 0, false, errInvalidRange
		}
		if err != nil || start >= size {
			return 0, size, false, nil
		}
		end := size - 1
		if b != "" {
			if end, err = strconv.ParseInt(b, 10, 64); err != nil || end < start {
				return 0, size, false, nil
			}
			if end >= size {
				end = size - 1
			}
		}
		return start, end - start + 1, true, nil
	}
}

func (s *Server) writeError(req *request, e *ossError) {
	if e.status >= 500 || e.status == 403 {
		s.cfg.Log.Warn("request failed", "op", req.op, "key", req.key, "status", e.status, "code", e.code, "request_id", req.requestID)
	}
	doc := errorDoc{Code: e.code, Message: e.message, RequestID: req.requestID, HostID: req.r.Host}
	if req.op == "HeadObject" {
		// HEAD has no body: OSS sends the document in x-oss-err.
		raw, _ := marshalXML(doc)
		req.w.Header().Set("x-oss-err", base64Std(raw))
		req.w.WriteHeader(e.status)
		return
	}
	writeXML(req.w, e.status, doc)
}

func newRequestID() string {
	var b [12]byte
	rand.Read(b[:])
	return strings.ToUpper(hex.EncodeToString(b[:]))
}

func isoTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }
