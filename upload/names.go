// Package upload turns staged files into objects: the OSS name rules (one
// place, used by fs/ and cmd/ alike), the metadata encoding shared with
// ossfs and s3fs, and the upload of a staged body with its headers.
package upload

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxKeyLen is the longest object key OSS accepts, in bytes.
const MaxKeyLen = 1023

// Errors of the name rules. fs/errno.go maps them to EINVAL and ENAMETOOLONG.
var (
	ErrInvalidName = errors.New("invalid object name")
	ErrNameTooLong = errors.New("object name too long")
)

// ValidateKey applies OSS's object name rules: valid UTF-8, 1 to 1,023
// bytes, not starting with "/" or "\".
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty", ErrInvalidName)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidName)
	case key[0] == '/' || key[0] == '\\':
		return fmt.Errorf(`%w: starts with "/" or "\"`, ErrInvalidName)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrNameTooLong, len(key), MaxKeyLen)
	}
	return nil
}

// BucketRule is the bucket naming rule, quoted in error messages.
const BucketRule = "a bucket name has 3 to 63 characters: lowercase letters, digits and hyphens (-), starting and ending with a lowercase letter or digit"

// ValidateBucket applies OSS's bucket name rules.
func ValidateBucket(name string) error {
	if len(name) < 3 || len(name) > 63 {
		return fmt.Errorf("invalid bucket name %q: %s", name, BucketRule)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		lowerOrDigit := 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
		if !lowerOrDigit && (c != '-' || i == 0 || i == len(name)-1) {
			return fmt.Errorf("invalid bucket name %q: %s", name, BucketRule)
		}
	}
	return nil
}

// NormalizePrefix turns a mount prefix ("", "/", "a/b", "/a/b/") into the
// key prefix it stands for ("" or "a/b/") and checks it against the key
// rules.
func NormalizePrefix(prefix string) (string, error) {
	p := strings.Trim(prefix, "/")
	if p == "" {
		return "", nil
	}
	p += "/"
	if strings.Contains(p, "//") {
		return "", fmt.Errorf("invalid prefix %q: %w: empty path component", prefix, ErrInvalidName)
	}
	if err := ValidateKey(p); err != nil {
		return "", fmt.Errorf("invalid prefix %q: %w", prefix, err)
	}
	return p, nil
}

// Key is the object key of a path below the mountpoint ("a/b.txt", no
// leading slash) under a normalized prefix.
func Key(prefix, path string) string { return prefix + path }

// DirKey is the key of a directory's marker object: its key plus "/".
func DirKey(prefix, path string) string {
	if path == "" {
		return prefix
	}
	return prefix + path + "/"
}

// Child joins a directory path and an entry name.
func Child(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}
