package bucket

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
)

// Sentinels every Bucket error wraps, so callers never look at SDK types.
var (
	ErrNotFound     = errors.New("object not found")
	ErrNoSuchBucket = errors.New("bucket not found")
	ErrAccessDenied = errors.New("access denied")
	ErrExists       = errors.New("object already exists")
	ErrInvalidName  = errors.New("invalid object name")
	// ErrTransient is a failure worth trying again later: 5xx, timeouts,
	// dropped connections, once the SDK's own retries are spent.
	ErrTransient = errors.New("transient failure")
	// ErrRejected is a 4xx the server gave no meaning of ours
	// (InvalidArgument, MalformedXML, EntityTooLarge, ...): the same
	// request would fail again.
	ErrRejected = errors.New("request rejected")
	// ErrIntegrity is a CRC64 mismatch between what was sent and what the
	// server stored.
	ErrIntegrity = errors.New("integrity check failed")
	// ErrChanged is a read of one version of an object (GetRequest.IfMatch)
	// that found another there.
	ErrChanged = errors.New("object changed while it was read")
	// errPastEnd is a range that starts past the end of the object; Get
	// answers it with nothing to read.
	errPastEnd = errors.New("range past the end of the object")
)

// Error is a failed request: which operation on which key, what the server
// said, and the sentinel it amounts to. It never holds credentials or URLs.
type Error struct {
	Op        string
	Key       string
	Status    int    // HTTP status, 0 when no response arrived
	Code      string // OSS error code
	RequestID string
	Kind      error // one of the sentinels
	Err       error // the cause, for messages
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s %q: %v", e.Op, e.Key, e.Kind)
	if e.Code != "" {
		s += fmt.Sprintf(" (%d %s, request id %s)", e.Status, e.Code, e.RequestID)
	} else if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Kind }

// RequestID returns the request id of a Bucket error, or "".
func RequestID(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.RequestID
	}
	return ""
}

// convert turns an SDK error of a request made with ctx into an *Error. It
// is the only place that inspects SDK errors.
func convert(ctx context.Context, op, key string, err error) error {
	if err == nil {
		return nil
	}
	e := &Error{Op: op, Key: key, Err: err}
	var se *oss.ServiceError
	switch {
	case errors.As(err, &se):
		e.Status, e.Code, e.RequestID = se.StatusCode, se.Code, se.RequestID
		e.Err = nil
		e.Kind = kindOf(se.StatusCode, se.Code)
		if se.Code == "NoSuchUpload" && op != "AbortMultipartUpload" {
			// The upload went away under a write (aborted by a lifecycle
			// rule or another client): the file is not in the bucket, and
			// sending it again works. Not "no such file", which close
			// said. An abort's, though, is the upload gone as asked.
			e.Kind = ErrTransient
		}
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		e.Kind = context.Canceled // else a stray one (strayCancel): transient
	case isCRCMismatch(err):
		e.Kind = ErrIntegrity
	case errors.Is(err, errRoleCredentials):
		e.Kind = ErrAccessDenied
	default:
		// Timeouts, resets and other client-side failures are worth another
		// try later, and are never taken for "not found".
		e.Kind = ErrTransient
	}
	return e
}

func kindOf(status int, code string) error {
	switch code {
	case "NoSuchKey":
		return ErrNotFound
	case "NoSuchBucket":
		return ErrNoSuchBucket
	case "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "SecurityTokenExpired", "InvalidSecurityToken":
		return ErrAccessDenied
	case "FileAlreadyExists":
		return ErrExists
	case "InvalidObjectName", "KeyTooLong":
		return ErrInvalidName
	case "InvalidRange":
		return errPastEnd
	case "PreconditionFailed":
		return ErrChanged
	}
	switch {
	case status == 404:
		return ErrNotFound // HEAD responses have no body, so no code
	case status == 403:
		return ErrAccessDenied
	case status == 409:
		return ErrExists
	case status == 412:
		return ErrChanged
	case status == 408 || status == 429:
		return ErrTransient // a timeout or throttling: later it may pass
	case status >= 400 && status < 500:
		return ErrRejected
	}
	return ErrTransient
}

// isCRCMismatch recognises a failed upload check (crc.go), and the
// Copier's own check of a copy, which it reports as a plain error with no
// type of its own.
func isCRCMismatch(err error) bool {
	var m *crcMismatch
	return errors.As(err, &m) || strings.Contains(err.Error(), "crc is inconsistent")
}

// strayCancel makes the SDK retry a request that failed with
// context.Canceled although its context is live (the SDK asks only then).
// net/http can hand a request a connection that another request's
// cancellation is closing: a request whose response has no body puts its
// connection back in the idle pool before its caller has it, and if its
// context is cancelled in between (a stream's parts, cancelled by its
// abort) the connection is closed under whoever took it, with the
// cancelled request's error. A close of a file failed so, with EINTR.
type strayCancel struct{}

func (strayCancel) IsErrorRetryable(err error) bool { return errors.Is(err, context.Canceled) }
