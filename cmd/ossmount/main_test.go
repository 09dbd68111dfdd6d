package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type closingBuffer struct{ bytes.Buffer }

func (*closingBuffer) Close() error { return nil }

// Detached with no syslog to reach (a container has no /dev/log), the
// logs go to ossmount.log in the cache directory (0600); they went
// nowhere. With syslog they go there, and no file is made.
func TestDetachedLogsWithoutSyslog(t *testing.T) {
	o := defaultOptions()
	o.CacheDir = filepath.Join(t.TempDir(), "cache")
	noSyslog := func() (io.WriteCloser, error) { return nil, errors.New("no /dev/log") }
	log, file, closeLog, err := newLogger(o, true, noSyslog)
	if err != nil || file == nil {
		t.Fatal(file, err)
	}
	log.Error("upload failed", "key", "k")
	closeLog()
	path := filepath.Join(o.CacheDir, "ossmount.log")
	data, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(data), "upload failed") {
		t.Fatalf("%s: %q %v", path, data, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("the log file is %v", fi.Mode())
	}

	o.CacheDir = filepath.Join(t.TempDir(), "cache")
	sl := &closingBuffer{}
	log, file, closeLog, err = newLogger(o, true, func() (io.WriteCloser, error) { return sl, nil })
	if err != nil || file != nil {
		t.Fatal(file, err)
	}
	log.Error("upload failed", "key", "k")
	closeLog()
	if !strings.Contains(sl.String(), "upload failed") {
		t.Errorf("syslog got %q", sl.String())
	}
	if _, err := os.Stat(filepath.Join(o.CacheDir, "ossmount.log")); !os.IsNotExist(err) {
		t.Errorf("a log file beside syslog: %v", err)
	}
}
