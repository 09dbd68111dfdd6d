package bucket

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss/credentials"
	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss/retry"
	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss/transport"

	"github.com/ossmount/ossmount/internal/crc64"
)

// Config says how to reach a bucket.
type Config struct {
	Bucket    string
	Endpoint  string // host[:port], or a URL with http:// or https://
	Region    string
	PathStyle bool // path-style addressing, for OSS-compatible servers
	// Credentials, when nil, come from RAMRoleURL if set (an ECS RAM
	// role's credentials in the instance metadata service), else from
	// OSS_ACCESS_KEY_ID, OSS_ACCESS_KEY_SECRET and OSS_SESSION_TOKEN.
	Credentials *Credentials
	RAMRoleURL  string
	// PartSize and Parallel tune multipart uploads; 0 takes the SDK's
	// defaults. Bodies smaller than PartSize go in one PutObject.
	PartSize int64
	Parallel int
	// RetryMaxAttempts bounds the SDK's tries of one request; 0: default.
	RetryMaxAttempts int
	// ConnectTimeout bounds a connection's setup (10 s if 0), and
	// ReadWriteTimeout each read and write on it (60 s if 0): a server
	// that stops answering fails the request, which is tried again.
	ConnectTimeout, ReadWriteTimeout time.Duration
	// SkipCertificateCheck accepts any TLS certificate (ossfs's
	// no_check_certificate), for a server with a self-signed one.
	SkipCertificateCheck bool
	// Encryption and Tagging apply to every object the mount writes
	// (uploads, and copies, which would otherwise lose the encryption).
	Encryption Encryption
	Tagging    string // x-oss-tagging, URL-encoded (see ParseTagging)
	// Multiparts, when set, is told of every multipart upload's start and
	// end (streams, the Uploader's and the Copier's).
	Multiparts MultipartLog
	// wrapTransport, set by tests only, wraps the HTTP transport.
	wrapTransport func(http.RoundTripper) http.RoundTripper
}

// Credentials is an access key. Its String method hides the secret so it
// cannot leak into a log line by accident.
type Credentials struct {
	AccessKeyID, AccessKeySecret, SessionToken string
}

func (c Credentials) String() string { return "Credentials{" + c.AccessKeyID + ", <secret hidden>}" }

// OSS is a Bucket over the official SDK.
type OSS struct {
	client   *oss.Client
	mp       *loggedClient // the client, for multipart requests
	uploader *oss.Uploader
	copier   *oss.Copier
	partSize int64 // the uploader's
	name     string
	// encryption and tagging go with every write (Config).
	encryption Encryption
	tagging    string
}

var _ Bucket = (*OSS)(nil)

// NewOSS returns a Bucket over the SDK. It sends nothing.
func NewOSS(cfg Config) *OSS {
	var provider credentials.CredentialsProvider = credentials.NewEnvironmentVariableCredentialsProvider()
	if c := cfg.Credentials; c != nil {
		provider = credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.AccessKeySecret, c.SessionToken)
	} else if cfg.RAMRoleURL != "" {
		provider = ramRoleProvider(cfg.RAMRoleURL)
	}
	region := cfg.Region
	if region == "" {
		region = regionFromEndpoint(cfg.Endpoint)
	}
	// The client carries the timeouts: the SDK reads its config's only to
	// build a client of its own.
	hc := httpClient(cmp.Or(cfg.ConnectTimeout, 10*time.Second), cmp.Or(cfg.ReadWriteTimeout, 60*time.Second), cfg.SkipCertificateCheck)
	if cfg.wrapTransport != nil {
		hc.Transport = cfg.wrapTransport(hc.Transport)
	}
	sdkCfg := oss.LoadDefaultConfig().
		WithCredentialsProvider(provider).
		WithRegion(region).
		WithEndpoint(cfg.Endpoint).
		WithUsePathStyle(cfg.PathStyle).
		WithHttpClient(hc).
		WithRetryer(retry.NewStandard(func(o *retry.RetryOptions) {
			o.ErrorRetryables = append(slices.Clip(retry.DefaultErrorRetryables), strayCancel{})
		})).
		// Uploads are checked by crc.go instead, several times faster.
		WithDisableUploadCRC64Check(true)
	if strings.HasPrefix(cfg.Endpoint, "http://") {
		sdkCfg = sdkCfg.WithDisableSSL(true)
	}
	if cfg.RetryMaxAttempts > 0 {
		sdkCfg = sdkCfg.WithRetryMaxAttempts(cfg.RetryMaxAttempts)
	}
	client := oss.NewClient(sdkCfg)
	partSize := cfg.PartSize
	if partSize <= 0 {
		partSize = oss.DefaultUploadPartSize
	}
	mp := &loggedClient{Client: client, log: cfg.Multiparts}
	return &OSS{
		client:     client,
		mp:         mp,
		partSize:   partSize,
		name:       cfg.Bucket,
		encryption: cfg.Encryption,
		tagging:    cfg.Tagging,
		uploader: oss.NewUploader(mp, func(o *oss.UploaderOptions) {
			if cfg.PartSize > 0 {
				o.PartSize = cfg.PartSize
			}
			if cfg.Parallel > 0 {
				o.ParallelNum = cfg.Parallel
			}
		}),
		copier: oss.NewCopier(mp),
	}
}

// httpClient is the SDK's own HTTP client but for the idle connections
// kept: the SDK keeps 10 per host, and ossmount runs more requests at once
// (16 write-back workers, parts of several files in flight), so every
// request past ten closed its connection when done, and the next one
// dialled — with TLS, a handshake — anew. All the connections the SDK may
// open (100 per host) may stay idle; they close after 50 s unused.
//
// It also takes its proxy from HTTPS_PROXY, HTTP_PROXY and NO_PROXY, as
// ossfs (libcurl) and Go programs do; the SDK's client goes straight to
// the endpoint, which a host behind a proxy cannot reach.
func httpClient(connect, readWrite time.Duration, skipVerify bool) *http.Client {
	return transport.NewHttpClient(&transport.Config{ConnectTimeout: &connect, ReadWriteTimeout: &readWrite},
		func(t *http.Transport) { t.MaxIdleConnsPerHost = transport.DefaultMaxConnections },
		transport.ProxyFromEnvironment(), transport.InsecureSkipVerify(skipVerify))
}

// regionFromEndpoint derives cn-hangzhou from oss-cn-hangzhou.aliyuncs.com;
// the SDK needs a region to sign (V4) even for other servers.
func regionFromEndpoint(endpoint string) string {
	host := endpoint
	if i := strings.Index(host, "://"); i >= 0 {
		host = host[i+3:]
	}
	host, _, _ = strings.Cut(host, ".")
	host = strings.TrimSuffix(host, "-internal")
	if r, ok := strings.CutPrefix(host, "oss-"); ok {
		return r
	}
	return "cn-hangzhou"
}

func (b *OSS) Name() string { return b.name }

func (b *OSS) Head(ctx context.Context, key string) (ObjectInfo, error) {
	res, err := b.client.HeadObject(ctx, &oss.HeadObjectRequest{Bucket: &b.name, Key: &key})
	if err != nil {
		return ObjectInfo{}, convert(ctx, "HeadObject", key, err)
	}
	info := ObjectInfo{Key: key, Size: res.ContentLength, ETag: oss.ToString(res.ETag),
		ContentType: oss.ToString(res.ContentType), Meta: map[string]string{}}
	info.CRC64, _ = strconv.ParseUint(oss.ToString(res.HashCRC64), 10, 64)
	if res.LastModified != nil {
		info.LastModified = *res.LastModified
	}
	for k, v := range res.Metadata {
		info.Meta[strings.ToLower(k)] = v
	}
	return info, nil
}

func (b *OSS) Get(ctx context.Context, get GetRequest) (Body, error) {
	key, off, length := get.Key, get.Off, get.Length
	req := &oss.GetObjectRequest{Bucket: &b.name, Key: &key, IfMatch: optional(get.IfMatch)}
	ranged := off > 0 || length >= 0
	if ranged {
		r := fmt.Sprintf("bytes=%d-", off)
		if length >= 0 {
			r += fmt.Sprint(off + length - 1)
		}
		// OSS's default answers a range past the end of the object with
		// the whole object, which a read at that offset would take for
		// the bytes there; standard refuses it (416).
		req.Range, req.RangeBehavior = &r, oss.Ptr("standard")
	}
	res, err := b.client.GetObject(ctx, req)
	if err := convert(ctx, "GetObject", key, err); errors.Is(err, errPastEnd) {
		return Body{ReadCloser: io.NopCloser(strings.NewReader("")), Size: -1}, nil // nothing to read there
	} else if err != nil {
		return Body{}, err
	}
	if off > 0 && res.ContentRange == nil {
		// A server that ignored the range sent the whole object.
		res.Body.Close()
		return Body{}, convert(ctx, "GetObject", key, fmt.Errorf("the server ignored the range %s", *req.Range))
	}
	size := res.ContentLength // the whole object, unless a range was answered
	if res.ContentRange != nil {
		size = totalOf(*res.ContentRange)
	}
	return Body{ReadCloser: res.Body, ETag: oss.ToString(res.ETag), Size: size}, nil
}

// totalOf reads the object's size from a Content-Range ("bytes a-b/total");
// -1 if it is not there.
func totalOf(contentRange string) int64 {
	_, total, ok := strings.Cut(contentRange, "/")
	n, err := strconv.ParseInt(total, 10, 64)
	if !ok || err != nil {
		return -1
	}
	return n
}

func (b *OSS) Put(ctx context.Context, req PutRequest) (PutResult, error) {
	preq := &oss.PutObjectRequest{Bucket: &b.name, Key: &req.Key, Metadata: req.Attrs.Meta,
		ServerSideEncryption: optional(b.encryption.Method), ServerSideEncryptionKeyId: optional(b.encryption.KeyID),
		Tagging: optional(b.tagging)}
	applyAttrs(req.Attrs, &preq.ContentType, &preq.StorageClass, &preq.Acl, &preq.ForbidOverwrite)
	var res *oss.UploadResult
	var err error
	if req.Size < b.partSize {
		// What the Uploader would send as one PutObject, without its
		// machinery, summing the bytes as they go.
		sent := &summedBody{r: io.NewSectionReader(req.Body, 0, req.Size)}
		preq.Body, preq.ContentLength = sent, oss.Ptr(req.Size)
		var pres *oss.PutObjectResult
		pres, err = b.client.PutObject(ctx, preq, checkCRC(func(*http.Response) (uint64, bool, error) { return sent.sum(req.Size) }))
		if err == nil {
			res = &oss.UploadResult{ETag: pres.ETag, ResultCommon: pres.ResultCommon}
		} else if req.Attrs.ForbidOverwrite && hasCode(err, "FileAlreadyExists") {
			// Perhaps the object this request made, its reply lost and the
			// request sent again by the SDK.
			if crc, ok, _ := sent.sum(req.Size); ok {
				if done, ok := b.landed(ctx, req.Key, req.Size, crc); ok {
					return done, nil
				}
			}
		}
	} else {
		body := io.NewSectionReader(req.Body, 0, req.Size)
		if req.Progress != nil {
			preq.ProgressFn = func(_, sent, _ int64) { req.Progress(sent) }
		}
		check := &uploaderCRC{body: body, size: req.Size, partSize: b.uploaderPartSize(req.Size), parts: map[int]uint64{}}
		res, err = b.uploader.UploadFrom(ctx, preq, body, func(o *oss.UploaderOptions) {
			o.ClientOptions = append(slices.Clip(o.ClientOptions), checkCRC(check.want))
		})
		if err == nil {
			err = check.object(res.HashCRC64)
		} else if hasCode(err, "NoSuchUpload") {
			if crc, sumErr := check.sum(); sumErr == nil {
				if done, ok := b.landed(ctx, req.Key, req.Size, crc); ok {
					return done, nil
				}
			}
		}
	}
	if err != nil {
		return PutResult{}, convert(ctx, "PutObject", req.Key, err)
	}
	return PutResult{ETag: oss.ToString(res.ETag), RequestID: res.Headers.Get("x-oss-request-id")}, nil
}

// uploaderPartSize is the part size the Uploader picks for size bytes: the
// configured one, grown so that at most 10,000 parts hold them.
func (b *OSS) uploaderPartSize(size int64) int64 {
	partSize := b.partSize
	for size/partSize >= int64(oss.MaxUploadParts) {
		partSize += b.partSize
	}
	return partSize
}

// optional is nil for "": the header is left out.
func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func applyAttrs(a Attrs, contentType **string, class *oss.StorageClassType, acl *oss.ObjectACLType, forbid **string) {
	if a.ContentType != "" {
		*contentType = oss.Ptr(a.ContentType)
	}
	*class = oss.StorageClassType(a.StorageClass)
	*acl = oss.ObjectACLType(a.ACL)
	if a.ForbidOverwrite {
		*forbid = oss.Ptr("true")
	}
}

func (b *OSS) List(ctx context.Context, req ListRequest) (ListPage, error) {
	lreq := &oss.ListObjectsV2Request{Bucket: &b.name, Prefix: &req.Prefix, MaxKeys: int32(req.MaxKeys)}
	if req.Delimiter != "" {
		lreq.Delimiter = &req.Delimiter
	}
	if req.ContinuationToken != "" {
		lreq.ContinuationToken = &req.ContinuationToken
	}
	res, err := b.client.ListObjectsV2(ctx, lreq)
	if err != nil {
		return ListPage{}, convert(ctx, "ListObjectsV2", req.Prefix, err)
	}
	var page ListPage
	for _, o := range res.Contents {
		info := ObjectInfo{Key: oss.ToString(o.Key), Size: o.Size, ETag: oss.ToString(o.ETag)}
		if o.LastModified != nil {
			info.LastModified = *o.LastModified
		}
		page.Objects = append(page.Objects, info)
	}
	for _, p := range res.CommonPrefixes {
		page.Prefixes = append(page.Prefixes, oss.ToString(p.Prefix))
	}
	if res.IsTruncated {
		page.NextToken = oss.ToString(res.NextContinuationToken)
	}
	return page, nil
}

func (b *OSS) Delete(ctx context.Context, key string) error {
	_, err := b.client.DeleteObject(ctx, &oss.DeleteObjectRequest{Bucket: &b.name, Key: &key})
	if err = convert(ctx, "DeleteObject", key, err); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

// maxDeleteBatch is the most keys one DeleteMultipleObjects names.
const maxDeleteBatch = 1000

func (b *OSS) DeleteMany(ctx context.Context, keys []string) error {
	// A key with a character XML cannot carry goes alone: escaped, it
	// would name another object.
	var batch, alone []string
	for _, k := range keys {
		if xmlSafe(k) {
			batch = append(batch, k)
		} else {
			alone = append(alone, k)
		}
	}
	for len(batch) > 0 {
		n := min(len(batch), maxDeleteBatch)
		left, err := b.deleteBatch(ctx, batch[:n])
		if err != nil {
			return err
		}
		alone, batch = append(alone, left...), batch[n:]
	}
	for _, k := range alone {
		if err := b.Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// deleteBatch deletes keys with one request and returns those the reply
// does not list as deleted (the caller deletes them one by one, which
// says what is wrong, if anything).
func (b *OSS) deleteBatch(ctx context.Context, keys []string) (left []string, err error) {
	objs := make([]oss.ObjectIdentifier, len(keys))
	for i := range keys {
		objs[i].Key = &keys[i]
	}
	res, err := b.client.DeleteMultipleObjects(ctx, &oss.DeleteMultipleObjectsRequest{Bucket: &b.name, Delete: &oss.Delete{Objects: objs}})
	if err != nil {
		return nil, convert(ctx, "DeleteMultipleObjects", keys[0], err)
	}
	deleted := make(map[string]bool, len(res.DeletedObjects))
	for _, d := range res.DeletedObjects {
		deleted[oss.ToString(d.Key)] = true
	}
	for _, k := range keys {
		if !deleted[k] {
			left = append(left, k)
		}
	}
	return left, nil
}

// xmlSafe reports whether every character of s is one XML 1.0 can carry
// (the SDK replaces the others).
func xmlSafe(s string) bool {
	for _, r := range s {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
		case r < 0x20, r >= 0xD800 && r <= 0xDFFF, r == 0xFFFE, r == 0xFFFF, r == utf8.RuneError:
			return false
		}
	}
	return true
}

func (b *OSS) Copy(ctx context.Context, c CopyRequest) error {
	// Tags are copied with the object (the default tagging directive).
	req := &oss.CopyObjectRequest{Bucket: &b.name, Key: &c.Dst, SourceBucket: &b.name, SourceKey: &c.Src,
		ServerSideEncryption: optional(b.encryption.Method), ServerSideEncryptionKeyId: optional(b.encryption.KeyID)}
	if c.Attrs != nil {
		req.MetadataDirective = oss.Ptr("REPLACE")
		req.Metadata = c.Attrs.Meta
		applyAttrs(*c.Attrs, &req.ContentType, &req.StorageClass, &req.Acl, &req.ForbidOverwrite)
	}
	var err error
	if c.Size >= 0 && c.Size < oss.DefaultCopyThreshold {
		_, err = b.client.CopyObject(ctx, req)
	} else {
		// The Copier heads the source, then makes one CopyObject below its
		// threshold and a multipart copy above it.
		_, err = b.copier.Copy(ctx, req)
	}
	return convert(ctx, "CopyObject", c.Dst, err)
}

func isNotFound(err error) bool {
	e, ok := err.(*Error)
	return ok && e.Kind == ErrNotFound
}

func (b *OSS) StartMultipart(ctx context.Context, key string, attrs Attrs) (string, error) {
	req := &oss.InitiateMultipartUploadRequest{Bucket: &b.name, Key: &key, Metadata: attrs.Meta,
		StorageClass: oss.StorageClassType(attrs.StorageClass), DisableAutoDetectMimeType: true,
		ServerSideEncryption: optional(b.encryption.Method), ServerSideEncryptionKeyId: optional(b.encryption.KeyID),
		Tagging: optional(b.tagging)}
	if attrs.ContentType != "" {
		req.ContentType = oss.Ptr(attrs.ContentType)
	}
	if attrs.ForbidOverwrite {
		req.ForbidOverwrite = oss.Ptr("true")
	}
	res, err := b.mp.InitiateMultipartUpload(ctx, req)
	if err != nil {
		return "", convert(ctx, "InitiateMultipartUpload", key, err)
	}
	return oss.ToString(res.UploadId), nil
}

func (b *OSS) UploadPart(ctx context.Context, key, uploadID string, number int, body io.ReaderAt, off, size int64) (Part, error) {
	sent := &summedBody{r: io.NewSectionReader(body, off, size)}
	res, err := b.client.UploadPart(ctx, &oss.UploadPartRequest{Bucket: &b.name, Key: &key, UploadId: &uploadID,
		PartNumber: int32(number), Body: sent, ContentLength: oss.Ptr(size)},
		checkCRC(func(*http.Response) (uint64, bool, error) { return sent.sum(size) }))
	if err != nil {
		return Part{}, convert(ctx, "UploadPart", key, err)
	}
	crc, _ := strconv.ParseUint(oss.ToString(res.HashCRC64), 10, 64)
	return Part{Number: number, Size: size, ETag: oss.ToString(res.ETag), CRC64: crc}, nil
}

func (b *OSS) CompleteMultipart(ctx context.Context, key, uploadID string, parts []Part, attrs Attrs) (PutResult, error) {
	req := &oss.CompleteMultipartUploadRequest{Bucket: &b.name, Key: &key, UploadId: &uploadID,
		Acl: oss.ObjectACLType(attrs.ACL), CompleteMultipartUpload: &oss.CompleteMultipartUpload{}}
	if attrs.ForbidOverwrite {
		req.ForbidOverwrite = oss.Ptr("true")
	}
	var crc uint64
	var size int64
	for _, p := range parts {
		req.CompleteMultipartUpload.Parts = append(req.CompleteMultipartUpload.Parts, oss.UploadPart{PartNumber: int32(p.Number), ETag: oss.Ptr(p.ETag)})
		crc = crc64.Combine(crc, p.CRC64, p.Size)
		size += p.Size
	}
	res, err := b.mp.CompleteMultipartUpload(ctx, req)
	if err != nil {
		if hasCode(err, "NoSuchUpload") {
			if done, ok := b.landed(ctx, key, size, crc); ok {
				return done, nil
			}
		}
		return PutResult{}, convert(ctx, "CompleteMultipartUpload", key, err)
	}
	requestID := res.Headers.Get("x-oss-request-id")
	if got := res.Headers.Get(crcHeader); got != "" {
		if err := compareCRC(crc, got); err != nil {
			return PutResult{}, &Error{Op: "CompleteMultipartUpload", Key: key, RequestID: requestID, Kind: ErrIntegrity, Err: err}
		}
	}
	return PutResult{ETag: oss.ToString(res.ETag), RequestID: requestID}, nil
}

// landed reports whether key holds size bytes of CRC-64 crc. A request
// whose reply was lost (a dropped connection) is sent again by the SDK, and
// finds its own work done: a multipart completion its upload gone
// (NoSuchUpload), a PutObject that must not overwrite its object there
// (FileAlreadyExists). The key holding the bytes sent tells that apart from
// a real failure; without a CRC from the server it cannot, and says no.
func (b *OSS) landed(ctx context.Context, key string, size int64, crc uint64) (PutResult, bool) {
	info, err := b.Head(ctx, key)
	if err != nil || info.CRC64 == 0 || info.Size != size || info.CRC64 != crc {
		return PutResult{}, false
	}
	return PutResult{ETag: info.ETag}, true
}

// hasCode reports whether err is the server's error code.
func hasCode(err error, code string) bool {
	var se *oss.ServiceError
	return errors.As(err, &se) && se.Code == code
}

func (b *OSS) CopyPart(ctx context.Context, key, uploadID string, number int, src CopySource) (Part, error) {
	res, err := b.client.UploadPartCopy(ctx, &oss.UploadPartCopyRequest{Bucket: &b.name, Key: &key, UploadId: &uploadID,
		PartNumber: int32(number), SourceKey: &src.Key, IfMatch: oss.Ptr(src.ETag),
		Range: oss.Ptr(fmt.Sprintf("bytes=%d-%d", src.Off, src.Off+src.Size-1))})
	if err != nil {
		return Part{}, convert(ctx, "UploadPartCopy", key, err)
	}
	got := res.Headers.Get(crcHeader)
	if src.Unsummed {
		crc, _ := strconv.ParseUint(got, 10, 64)
		return Part{Number: number, Size: src.Size, ETag: oss.ToString(res.ETag), CRC64: crc}, nil
	}
	if got != "" {
		if err := compareCRC(src.CRC64, got); err != nil {
			return Part{}, &Error{Op: "UploadPartCopy", Key: key, RequestID: res.Headers.Get("x-oss-request-id"), Kind: ErrIntegrity, Err: err}
		}
	}
	return Part{Number: number, Size: src.Size, ETag: oss.ToString(res.ETag), CRC64: src.CRC64}, nil
}

func (b *OSS) AbortMultipart(ctx context.Context, key, uploadID string) error {
	_, err := b.mp.AbortMultipartUpload(ctx, &oss.AbortMultipartUploadRequest{Bucket: &b.name, Key: &key, UploadId: &uploadID})
	return convert(ctx, "AbortMultipartUpload", key, err)
}
