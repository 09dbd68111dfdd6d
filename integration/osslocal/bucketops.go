package osslocal

import (
	"encoding/base64"
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/ossmount/ossmount/bucket/store"
)

type errorDoc struct {
	XMLName   xml.Name `xml:"Error"`
	Code      string
	Message   string
	RequestID string `xml:"RequestId"`
	HostID    string `xml:"HostId"`
}

type copyObjectResult struct {
	XMLName      xml.Name `xml:"CopyObjectResult"`
	ETag         string
	LastModified string
}

type listContents struct {
	Key          string
	LastModified string
	ETag         string
	Type         string
	Size         int64
	StorageClass string
}

type commonPrefix struct{ Prefix string }

type listResult struct {
	XMLName               xml.Name `xml:"ListBucketResult"`
	Name                  string
	Prefix                string
	Marker                *string `xml:",omitempty"`
	MaxKeys               int
	Delimiter             string
	EncodingType          string `xml:",omitempty"`
	IsTruncated           bool
	NextMarker            string `xml:",omitempty"`
	KeyCount              *int   `xml:",omitempty"`
	ContinuationToken     string `xml:",omitempty"`
	NextContinuationToken string `xml:",omitempty"`
	Contents              []listContents
	CommonPrefixes        []commonPrefix
}

func marshalXML(v any) ([]byte, error) {
	raw, err := xml.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append([]byte(xml.Header), raw...), nil
}

func writeXML(w http.ResponseWriter, status int, v any) error {
	raw, err := marshalXML(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
	w.WriteHeader(status)
	w.Write(raw)
	return nil
}

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// list answers ListObjects (marker) and ListObjectsV2 (continuation-token).
// The continuation token is the key to start after, base64-encoded.
func (s *Server) list(req *request) error {
	q := req.query
	maxKeys := 100
	if v := q.Get("max-keys"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 1000 {
			return &ossError{400, "InvalidArgument", "max-keys must be between 0 and 1000"}
		}
		maxKeys = n
	}
	v2 := req.op == "ListObjectsV2"
	startAfter := q.Get("marker")
	if v2 {
		startAfter = q.Get("start-after")
		if tok := q.Get("continuation-token"); tok != "" {
			raw, err := base64.URLEncoding.DecodeString(tok)
			if err != nil {
				return &ossError{400, "InvalidArgument", "invalid continuation-token"}
			}
			startAfter = string(raw)
		}
	}
	res := listResult{Name: req.bucket, Prefix: q.Get("prefix"), MaxKeys: maxKeys, Delimiter: q.Get("delimiter")}
	page := store.ListResult{}
	if maxKeys > 0 {
		var err error
		page, err = s.cfg.Store.List(req.bucket, store.ListRequest{Prefix: res.Prefix, Delimiter: res.Delimiter, StartAfter: startAfter, MaxKeys: maxKeys})
		if err != nil {
			return err
		}
	}
	enc := func(s string) string { return s }
	if q.Get("encoding-type") == "url" {
		res.EncodingType = "url"
		enc = url.QueryEscape
	}
	res.Prefix, res.Delimiter = enc(res.Prefix), enc(res.Delimiter)
	res.IsTruncated = page.Truncated
	for _, o := range page.Objects {
		class := o.StorageClass
		if class == "" {
			class = "Standard"
		}
		res.Contents = append(res.Contents, listContents{Key: enc(o.Key), LastModified: isoTime(o.LastModified),
			ETag: o.ETag, Type: "Normal", Size: o.Size, StorageClass: class})
	}
	for _, p := range page.Prefixes {
		res.CommonPrefixes = append(res.CommonPrefixes, commonPrefix{enc(p)})
	}
	if v2 {
		n := len(page.Objects) + len(page.Prefixes)
		res.KeyCount = &n
		res.ContinuationToken = q.Get("continuation-token")
		if page.Truncated {
			res.NextContinuationToken = base64.URLEncoding.EncodeToString([]byte(page.Next))
		}
	} else {
		m := enc(startAfter)
		res.Marker = &m
		if page.Truncated {
			res.NextMarker = enc(page.Next)
		}
	}
	return writeXML(req.w, http.StatusOK, res)
}

func (s *Server) bucketInfo(req *request) error {
	type bucket struct{ Name, Location, StorageClass string }
	type info struct {
		XMLName xml.Name `xml:"BucketInfo"`
		Bucket  bucket
	}
	return writeXML(req.w, http.StatusOK, info{Bucket: bucket{Name: req.bucket, Location: "oss-local", StorageClass: "Standard"}})
}

func (s *Server) deleteMultiple(req *request) error {
	var body struct {
		Quiet   bool
		Objects []struct{ Key string } `xml:"Object"`
	}
	if err := xml.NewDecoder(io.LimitReader(req.r.Body, 4<<20)).Decode(&body); err != nil {
		return &ossError{400, "MalformedXML", "The XML you provided was not well-formed."}
	}
	type deleted struct{ Key string }
	var out struct {
		XMLName      xml.Name `xml:"DeleteResult"`
		EncodingType string   `xml:",omitempty"`
		Deleted      []deleted
	}
	enc := func(s string) string { return s }
	if req.query.Get("encoding-type") == "url" {
		out.EncodingType = "url"
		enc = url.QueryEscape
	}
	for _, o := range body.Objects {
		key := o.Key
		if out.EncodingType == "url" {
			if k, err := url.QueryUnescape(key); err == nil {
				key = k
			}
		}
		if err := s.cfg.Store.Delete(req.bucket, key); err != nil {
			return err
		}
		if !body.Quiet {
			out.Deleted = append(out.Deleted, deleted{enc(key)})
		}
	}
	return writeXML(req.w, http.StatusOK, out)
}

func (s *Server) initiateMultipart(req *request) error {
	attrs, err := attrsFrom(req.r.Header)
	if err != nil {
		return err
	}
	id, err := s.cfg.Store.InitiateMultipart(req.bucket, req.key, attrs)
	if err != nil {
		return err
	}
	var out struct {
		XMLName  xml.Name `xml:"InitiateMultipartUploadResult"`
		Bucket   string
		Key      string
		UploadID string `xml:"UploadId"`
	}
	out.Bucket, out.Key, out.UploadID = req.bucket, req.key, id
	return writeXML(req.w, http.StatusOK, out)
}

func (s *Server) partNumber(req *request) (int, error) {
	n, err := strconv.Atoi(req.query.Get("partNumber"))
	if err != nil || n < 1 || n > 10000 {
		return 0, &ossError{400, "InvalidArgument", "partNumber must be between 1 and 10000"}
	}
	return n, nil
}

func (s *Server) uploadPart(req *request) error {
	n, err := s.partNumber(req)
	if err != nil {
		return err
	}
	p, err := s.cfg.Store.UploadPart(req.bucket, req.query.Get("uploadId"), n, req.r.Body)
	if err != nil {
		return err
	}
	req.w.Header().Set("ETag", p.ETag)
	req.w.Header().Set("x-oss-hash-crc64ecma", strconv.FormatUint(p.CRC64, 10))
	req.w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) uploadPartCopy(req *request) error {
	n, err := s.partNumber(req)
	if err != nil {
		return err
	}
	srcBucket, srcKey, err := s.copySource(req)
	if err != nil {
		return err
	}
	obj, err := s.cfg.Store.Head(srcBucket, srcKey)
	if err != nil {
		return err
	}
	if etag := req.r.Header.Get("x-oss-copy-source-if-match"); etag != "" && etag != obj.ETag {
		return errPreconditionFailed
	}
	off, length, _, err := parseRange(req.r.Header.Get("x-oss-copy-source-range"), obj.Size, false)
	if err != nil {
		return err
	}
	_, body, err := s.cfg.Store.Open(srcBucket, srcKey, off, length)
	if err != nil {
		return err
	}
	defer body.Close()
	p, err := s.cfg.Store.UploadPart(req.bucket, req.query.Get("uploadId"), n, body)
	if err != nil {
		return err
	}
	var out struct {
		XMLName      xml.Name `xml:"CopyPartResult"`
		LastModified string
		ETag         string
	}
	out.LastModified, out.ETag = isoTime(obj.LastModified), p.ETag
	req.w.Header().Set("x-oss-hash-crc64ecma", strconv.FormatUint(p.CRC64, 10))
	return writeXML(req.w, http.StatusOK, out)
}

func (s *Server) completeMultipart(req *request) error {
	id := req.query.Get("uploadId")
	var body struct {
		Parts []struct {
			PartNumber int
			ETag       string
		} `xml:"Part"`
	}
	var parts []store.PartInfo
	if strings.EqualFold(req.r.Header.Get("x-oss-complete-all"), "yes") {
		_, all, err := s.cfg.Store.ListParts(req.bucket, id)
		if err != nil {
			return err
		}
		parts = all
	} else {
		if err := xml.NewDecoder(io.LimitReader(req.r.Body, 4<<20)).Decode(&body); err != nil {
			return &ossError{400, "MalformedXML", "The XML you provided was not well-formed."}
		}
		for _, p := range body.Parts {
			parts = append(parts, store.PartInfo{Number: p.PartNumber, ETag: p.ETag})
		}
	}
	obj, err := s.cfg.Store.CompleteMultipart(req.bucket, id, parts, req.r.Header.Get("x-oss-object-acl"), forbidOverwrite(req.r.Header))
	if err != nil {
		return err
	}
	var out struct {
		XMLName      xml.Name `xml:"CompleteMultipartUploadResult"`
		EncodingType string   `xml:",omitempty"`
		Location     string
		Bucket       string
		Key          string
		ETag         string
	}
	out.Bucket, out.Key, out.ETag = req.bucket, req.key, obj.ETag
	if req.query.Get("encoding-type") == "url" {
		out.EncodingType, out.Key = "url", url.QueryEscape(req.key)
	}
	req.w.Header().Set("x-oss-hash-crc64ecma", strconv.FormatUint(obj.CRC64, 10))
	return writeXML(req.w, http.StatusOK, out)
}

func (s *Server) listParts(req *request) error {
	key, parts, err := s.cfg.Store.ListParts(req.bucket, req.query.Get("uploadId"))
	if err != nil {
		return err
	}
	type part struct {
		PartNumber    int
		LastModified  string
		ETag          string
		Size          int64
		HashCrc64ecma uint64
	}
	var out struct {
		XMLName     xml.Name `xml:"ListPartsResult"`
		Bucket      string
		Key         string
		UploadID    string `xml:"UploadId"`
		MaxParts    int
		IsTruncated bool
		Parts       []part `xml:"Part"`
	}
	out.Bucket, out.Key, out.UploadID, out.MaxParts = req.bucket, key, req.query.Get("uploadId"), 1000
	for _, p := range parts {
		out.Parts = append(out.Parts, part{PartNumber: p.Number, ETag: p.ETag, Size: p.Size, HashCrc64ecma: p.CRC64})
	}
	return writeXML(req.w, http.StatusOK, out)
}
