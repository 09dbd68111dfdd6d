package main

import "testing"

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		"/mnt/oss":          "/mnt/oss",
		`/mnt/my\040bucket`: "/mnt/my bucket",
		`/a\011b\012c\134d`: "/a\tb\nc\\d",
		`/trailing\04`:      `/trailing\04`,
		`/not\999octal`:     `/not\999octal`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
