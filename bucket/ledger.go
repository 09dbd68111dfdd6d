package bucket

import (
	"context"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
)

// MultipartLog is told of every multipart upload the bucket starts and of
// its end, so that an upload a crash leaves behind — its parts stored and
// billed, invisible in listings — can be aborted by a later mount.
type MultipartLog interface {
	// Started is called once the server has given the upload its ID.
	Started(key, uploadID string)
	// Ended is called once the upload is completed or aborted (or the
	// server no longer knows it).
	Ended(uploadID string)
}

// loggedClient is the SDK client with every multipart upload's start and
// end told to a MultipartLog. The SDK's Uploader and Copier take it in
// place of the client, so their uploads are logged too, not only those the
// streams begin.
type loggedClient struct {
	*oss.Client
	log MultipartLog // nil: none
}

func (c *loggedClient) InitiateMultipartUpload(ctx context.Context, req *oss.InitiateMultipartUploadRequest, optFns ...func(*oss.Options)) (*oss.InitiateMultipartUploadResult, error) {
	res, err := c.Client.InitiateMultipartUpload(ctx, req, optFns...)
	if err == nil && c.log != nil {
		c.log.Started(oss.ToString(req.Key), oss.ToString(res.UploadId))
	}
	return res, err
}

func (c *loggedClient) CompleteMultipartUpload(ctx context.Context, req *oss.CompleteMultipartUploadRequest, optFns ...func(*oss.Options)) (*oss.CompleteMultipartUploadResult, error) {
	res, err := c.Client.CompleteMultipartUpload(ctx, req, optFns...)
	c.ended(oss.ToString(req.UploadId), err)
	return res, err
}

func (c *loggedClient) AbortMultipartUpload(ctx context.Context, req *oss.AbortMultipartUploadRequest, optFns ...func(*oss.Options)) (*oss.AbortMultipartUploadResult, error) {
	res, err := c.Client.AbortMultipartUpload(ctx, req, optFns...)
	c.ended(oss.ToString(req.UploadId), err)
	return res, err
}

// ended tells the log of an upload that no longer exists: the request
// succeeded, or the server does not know the upload. After any other
// failure the upload may still hold parts.
func (c *loggedClient) ended(uploadID string, err error) {
	if c.log != nil && (err == nil || hasCode(err, "NoSuchUpload")) {
		c.log.Ended(uploadID)
	}
}
