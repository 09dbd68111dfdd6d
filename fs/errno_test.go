package fs

import (
	"errors"
	"fmt"
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
		{fmt.Errorf("write staging: %w", syscall.ENOSPC), syscall.ENOSPC},
		{errors.New("something else"), syscall.EIO},
	} {
		if got := errnoOf(tc.err); got != tc.want {
			t.Errorf("errnoOf(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
