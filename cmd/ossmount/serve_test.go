package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestUnder(t *testing.T) {
	root := t.TempDir()
	mnt := filepath.Join(root, "mnt")
	os.Mkdir(mnt, 0o755)
	link := filepath.Join(root, "link")
	os.Symlink(mnt, link)
	for _, tc := range []struct {
		path string
		want bool
	}{
		{mnt, true},
		{filepath.Join(mnt, "cache"), true},
		{filepath.Join(mnt, "not", "yet", "made"), true},
		{filepath.Join(link, "cache"), true}, // through a link to the mountpoint
		{filepath.Join(mnt, "..", "cache"), false},
		{mnt + "2", false},
		{root, false},
	} {
		if got := under(tc.path, mnt); got != tc.want {
			t.Errorf("under(%s, %s) = %v, want %v", tc.path, mnt, got, tc.want)
		}
	}
}
