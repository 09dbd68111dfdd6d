package bucket

import (
	"strings"
	"testing"
)

func TestParseTagging(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"", "", ""},
		{"team=storage&project=oss+mount", "project=oss+mount&team=storage", ""},
		{"k=a%26b", "k=a%26b", ""},
		{"empty=", "empty=", ""},
		{"=v", "", "1 to 128"},
		{"k=1&k=2", "", "given 2 times"},
		{"a=1&b=2&c=3&d=4&e=5&f=6&g=7&h=8&i=9&j=10&k=11", "", "at most 10"},
		{"k=" + strings.Repeat("v", 257), "", "at most 256"},
		{"k=%zz", "", "invalid"},
	} {
		got, err := ParseTagging(tc.in)
		if tc.err == "" && (err != nil || got != tc.want) {
			t.Errorf("ParseTagging(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("ParseTagging(%q) error %v; want one saying %q", tc.in, err, tc.err)
		}
	}
}

func TestParseEncryption(t *testing.T) {
	for _, tc := range []struct {
		method, key string
		ok          bool
	}{
		{"", "", true}, {"AES256", "", true}, {"SM4", "", true}, {"KMS", "", true}, {"KMS", "key-1", true},
		{"aes256", "", false}, {"DES", "", false}, {"AES256", "key-1", false}, {"", "key-1", false},
	} {
		_, err := ParseEncryption(tc.method, tc.key)
		if (err == nil) != tc.ok {
			t.Errorf("ParseEncryption(%q, %q): %v", tc.method, tc.key, err)
		}
	}
}
