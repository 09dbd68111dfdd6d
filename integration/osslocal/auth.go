package osslocal

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"strings"
)

// verifyV4 checks an OSS4-HMAC-SHA256 Authorization header against the
// configured keys. It is written from OSS's signature V4 description, not
// from the SDK, so that a client bug shows up as SignatureDoesNotMatch.
func verifyV4(r *http.Request, bucket, key string, secrets map[string]string) error {
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "OSS4-HMAC-SHA256 ")
	if !ok {
		return fmt.Errorf("only OSS4-HMAC-SHA256 header signatures are accepted")
	}
	fields := map[string]string{}
	for _, f := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
		fields[k] = v
	}
	cred := strings.Split(fields["Credential"], "/")
	if len(cred) != 5 || cred[4] != "aliyun_v4_request" {
		return fmt.Errorf("malformed Credential")
	}
	id, date, region, product := cred[0], cred[1], cred[2], cred[3]
	secret, ok := secrets[id]
	if !ok {
		return errUnknownKey
	}
	var additional []string
	if a := fields["AdditionalHeaders"]; a != "" {
		additional = strings.Split(a, ";")
	}
	datetime := r.Header.Get("x-oss-date")
	if !strings.HasPrefix(datetime, date) {
		return fmt.Errorf("x-oss-date does not match the credential scope")
	}
	canonical := canonicalRequest(r, bucket, key, additional)
	sum := sha256.Sum256([]byte(canonical))
	scope := date + "/" + region + "/" + product + "/aliyun_v4_request"
	toSign := "OSS4-HMAC-SHA256\n" + datetime + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	k := []byte("aliyun_v4" + secret)
	for _, part := range []string{date, region, product, "aliyun_v4_request", toSign} {
		k = hmacSHA256(k, part)
	}
	if !hmac.Equal([]byte(hex.EncodeToString(k)), []byte(fields["Signature"])) {
		return errBadSignature
	}
	return nil
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

func canonicalRequest(r *http.Request, bucket, key string, additional []string) string {
	uri := "/"
	if bucket != "" {
		uri += bucket + "/" + key
	}
	var b strings.Builder
	b.WriteString(r.Method + "\n")
	b.WriteString(uriEscape(uri) + "\n")
	b.WriteString(canonicalQuery(r.URL.RawQuery) + "\n")

	extra := map[string]bool{}
	for _, h := range additional {
		extra[strings.ToLower(h)] = true
	}
	var names []string
	for k := range r.Header {
		l := strings.ToLower(k)
		if strings.HasPrefix(l, "x-oss-") || l == "content-type" || l == "content-md5" || extra[l] {
			names = append(names, l)
		}
	}
	if extra["host"] {
		names = append(names, "host")
	}
	sort.Strings(names)
	for _, n := range names {
		var vals []string
		if n == "host" {
			vals = []string{r.Host}
		} else {
			for _, v := range r.Header.Values(n) {
				vals = append(vals, strings.TrimSpace(v))
			}
		}
		b.WriteString(n + ":" + strings.Join(vals, ",") + "\n")
	}
	b.WriteString("\n")
	b.WriteString(strings.Join(additional, ";") + "\n")
	payload := r.Header.Get("x-oss-content-sha256")
	if payload == "" {
		payload = "UNSIGNED-PAYLOAD"
	}
	b.WriteString(payload)
	return b.String()
}

// canonicalQuery sorts the raw query's parameters by name, keeping their
// encoding, and drops "=" for empty values.
func canonicalQuery(raw string) string {
	raw = strings.ReplaceAll(raw, "+", "%20")
	vals := map[string]string{}
	var names []string
	for _, p := range strings.Split(raw, "&") {
		if p == "" {
			continue
		}
		k, v, _ := strings.Cut(p, "=")
		vals[k] = v
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for i, k := range names {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(k)
		if vals[k] != "" {
			b.WriteString("=" + vals[k])
		}
	}
	return b.String()
}

// uriEscape percent-encodes everything but unreserved characters and "/".
func uriEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("-._~/", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
