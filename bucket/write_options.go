package bucket

import (
	"fmt"
	"net/url"
	"unicode/utf8"
)

// Encryption is server-side encryption of written objects
// (x-oss-server-side-encryption and its key id).
type Encryption struct {
	Method string // "", AES256, KMS or SM4
	KeyID  string // a KMS key id; only with KMS
}

// ParseEncryption checks a method and key id as OSS accepts them.
func ParseEncryption(method, keyID string) (Encryption, error) {
	switch method {
	case "", "AES256", "KMS", "SM4":
	default:
		return Encryption{}, fmt.Errorf("server-side encryption %q: want AES256, KMS or SM4", method)
	}
	if keyID != "" && method != "KMS" {
		return Encryption{}, fmt.Errorf("a KMS key id needs server-side encryption KMS")
	}
	return Encryption{Method: method, KeyID: keyID}, nil
}

// ParseTagging checks object tags given as k=v&k2=v2 (URL-encoded, as the
// x-oss-tagging header carries them) against OSS's limits and returns them
// in canonical form.
func ParseTagging(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	q, err := url.ParseQuery(s)
	if err != nil {
		return "", fmt.Errorf("tags %q: %v", s, err)
	}
	if len(q) > 10 {
		return "", fmt.Errorf("tags %q: at most 10 tags", s)
	}
	for k, vs := range q {
		if len(vs) != 1 {
			return "", fmt.Errorf("tags %q: tag %q given %d times", s, k, len(vs))
		}
		if k == "" || utf8.RuneCountInString(k) > 128 || utf8.RuneCountInString(vs[0]) > 256 {
			return "", fmt.Errorf("tags %q: a key has 1 to 128 characters, a value at most 256", s)
		}
	}
	return q.Encode(), nil // sorted by key
}
