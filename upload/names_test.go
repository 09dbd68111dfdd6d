package upload

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidateKey(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want error
	}{
		{"a", nil},
		{"dir/file.txt", nil},
		{"日本語/ファイル", nil},
		{"a\\b", nil}, // a backslash inside is fine
		{"trailing/", nil},
		{strings.Repeat("x", 1023), nil},
		{strings.Repeat("é", 511) + "x", nil}, // 1,023 bytes
		{"", ErrInvalidName},
		{"/abs", ErrInvalidName},
		{"\\back", ErrInvalidName},
		{"bad\xffname", ErrInvalidName},
		{"\xc3", ErrInvalidName}, // truncated UTF-8 sequence
		{strings.Repeat("x", 1024), ErrNameTooLong},
		{strings.Repeat("é", 512), ErrNameTooLong}, // 1,024 bytes
	} {
		err := ValidateKey(tc.key)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("ValidateKey(%.40q) = %v, want %v", tc.key, err, tc.want)
		}
	}
}

func TestValidateBucket(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"abc", true},
		{"my-bucket-1", true},
		{"0bucket9", true},
		{strings.Repeat("a", 63), true},
		{"ab", false},
		{strings.Repeat("a", 64), false},
		{"-abc", false},
		{"abc-", false},
		{"Abc", false},
		{"a_b", false},
		{"a.b", false},
		{"", false},
	} {
		err := ValidateBucket(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateBucket(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), BucketRule) {
			t.Errorf("error does not quote the rule: %v", err)
		}
	}
}

func TestNormalizePrefix(t *testing.T) {
	for in, want := range map[string]string{"": "", "/": "", "a": "a/", "/a/b/": "a/b/", "a/b": "a/b/"} {
		got, err := NormalizePrefix(in)
		if err != nil || got != want {
			t.Errorf("NormalizePrefix(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"a//b", "\\x", "bad\xff", strings.Repeat("p", 1023)} {
		if _, err := NormalizePrefix(bad); err == nil {
			t.Errorf("NormalizePrefix(%q) accepted", bad)
		}
	}
}

func TestKeys(t *testing.T) {
	if got := Key("p/", Child("a", "b")); got != "p/a/b" {
		t.Errorf("Key = %q", got)
	}
	if got := DirKey("p/", "a"); got != "p/a/" {
		t.Errorf("DirKey = %q", got)
	}
	if got := DirKey("p/", ""); got != "p/" {
		t.Errorf("DirKey root = %q", got)
	}
}

func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"a", "/a", "\\a", "a\xff", strings.Repeat("x", 1024)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := ValidateKey(key)
		valid := key != "" && utf8.ValidString(key) && len(key) <= MaxKeyLen && key[0] != '/' && key[0] != '\\'
		if valid != (err == nil) {
			t.Fatalf("ValidateKey(%q) = %v", key, err)
		}
		if errors.Is(err, ErrNameTooLong) && len(key) <= MaxKeyLen {
			t.Fatalf("too long for %d bytes", len(key))
		}
	})
}
