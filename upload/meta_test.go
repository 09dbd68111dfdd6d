package upload

import (
	"testing"
	"time"
)

func TestFormatTime(t *testing.T) {
	for _, tc := range []struct {
		t    time.Time
		want string
	}{
		{time.Unix(1700000000, 0), "1700000000"},
		{time.Unix(1700000000, 123456789), "1700000000.123456789"},
		{time.Unix(1700000000, 5), "1700000000.000000005"},
		{time.Unix(1700000000, 500000000), "1700000000.500000000"},
	} {
		if got := FormatTime(tc.t); got != tc.want {
			t.Errorf("FormatTime = %q, want %q", got, tc.want)
		}
		if back, ok := ParseTime(tc.want); !ok || !back.Equal(tc.t) {
			t.Errorf("ParseTime(%q) = %v, %v", tc.want, back, ok)
		}
	}
}

func TestParseTimeScalesShortFractions(t *testing.T) {
	for in, want := range map[string]time.Time{
		"1700000000.5":          time.Unix(1700000000, 500000000),
		"1700000000.123":        time.Unix(1700000000, 123000000),
		"1700000000.":           time.Unix(1700000000, 0),
		"1700000000.1234567891": time.Unix(1700000000, 123456789),
		" 1700000000 ":          time.Unix(1700000000, 0),
	} {
		if got, ok := ParseTime(in); !ok || !got.Equal(want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", "abc", "1.x", "1.-5"} {
		if _, ok := ParseTime(bad); ok {
			t.Errorf("ParseTime(%q) accepted", bad)
		}
	}
}

func TestMetadataRoundTrip(t *testing.T) {
	m := Metadata{Mode: 0o100644, UID: 1000, GID: 100, Mtime: time.Unix(1700000000, 42)}
	enc := m.Encode()
	if enc["mode"] != "33188" || enc["uid"] != "1000" || enc["gid"] != "100" || enc["mtime"] != "1700000000.000000042" {
		t.Fatalf("Encode = %v", enc)
	}
	if _, ok := enc["atime"]; ok {
		t.Fatalf("zero atime encoded: %v", enc)
	}
	def := Metadata{Mode: 0o100600, UID: 1, GID: 2, Mtime: time.Unix(5, 0)}
	got := DecodeMetadata(enc, def)
	if got.Mode != m.Mode || got.UID != 1000 || got.GID != 100 || !got.Mtime.Equal(m.Mtime) {
		t.Fatalf("Decode = %+v", got)
	}
	if got := DecodeMetadata(map[string]string{"mode": "junk"}, def); got != def {
		t.Fatalf("defaults not kept: %+v", got)
	}
}

// A device's number goes with it; other files carry no rdev.
func TestMetadataRdev(t *testing.T) {
	dev := Metadata{Mode: 0o20644, Rdev: 1<<8 | 3}
	enc := dev.Encode()
	if enc["rdev"] != "259" {
		t.Fatalf("encoded rdev %q", enc["rdev"])
	}
	if back := DecodeMetadata(enc, Metadata{}); back.Rdev != dev.Rdev || back.Mode != dev.Mode {
		t.Fatalf("decoded %+v", back)
	}
	if _, ok := (Metadata{Mode: 0o100644}).Encode()["rdev"]; ok {
		t.Fatal("a regular file's metadata has an rdev")
	}
}
