package fs

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"syscall"
	"testing"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/upload"
)

func TestErrnoOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{fmt.Errorf("x: %w", upload.ErrInvalidName), syscall.EINVAL},
		{fmt.Errorf("x: %w", upload.ErrNameTooLong), syscall.ENAMETOOLONG},
		{&bucket.Error{Kind: bucket.ErrNotFound}, syscall.ENOENT},
		{&bucket.Error{Kind: bucket.ErrAccessDenied}, syscall.EACCES},
		{&bucket.Error{Kind: bucket.ErrExists}, syscall.EEXIST},
		{&bucket.Error{Kind: bucket.ErrTransient}, syscall.EIO},
		{&bucket.Error{Kind: bucket.ErrRejected}, syscall.EIO},
		{&bucket.Error{Kind: bucket.ErrIntegrity}, syscall.EIO},
		{&bucket.Error{Kind: bucket.ErrInvalidName}, syscall.EINVAL},
		{&bucket.Error{Kind: bucket.ErrChanged}, syscall.ESTALE},
		{fmt.Errorf("write staging: %w", syscall.ENOSPC), syscall.ENOSPC},
		{errors.New("something else"), syscall.EIO},
	} {
		if got := errnoOf(tc.err); got != tc.want {
			t.Errorf("errnoOf(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// fail logs every failure but the answers: a name not there, and a file
// unlinked meanwhile. Another client's replacement of an object being read
// is ESTALE too, and is logged.
func TestFailLogsAllButAnswers(t *testing.T) {
	for _, tc := range []struct {
		err    error
		logged bool
	}{
		{&bucket.Error{Kind: bucket.ErrNotFound}, false},
		{syscall.ESTALE, false},
		{&bucket.Error{Op: "GetObject", Key: "k", Status: 412, Kind: bucket.ErrChanged}, true},
		{&bucket.Error{Kind: bucket.ErrTransient}, true},
	} {
		var out bytes.Buffer
		f := &FS{log: slog.New(slog.NewTextHandler(&out, nil))}
		f.fail("read", "k", tc.err)
		if got := strings.Contains(out.String(), `key=k`); got != tc.logged {
			t.Errorf("fail(%v): logged %v, want %v: %q", tc.err, got, tc.logged, out.String())
		}
	}
}
