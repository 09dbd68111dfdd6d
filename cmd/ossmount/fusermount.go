package main

import (
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// captureStderr points descriptor 2 at a pipe while go-fuse mounts through
// fusermount3, which writes why it refused there — no access to
// /dev/fuse, none to the mountpoint, allow_other without
// user_allow_other in /etc/fuse.conf — and go-fuse only says "fusermount
// exited with code 256". A detached mount's descriptor 2 is /dev/null.
// done puts descriptor 2 back and returns what was written meanwhile.
func captureStderr() (done func() string) {
	r, w, err := os.Pipe()
	if err != nil {
		return func() string { return "" }
	}
	saved, err := unix.Dup(2)
	if err == nil {
		err = unix.Dup3(int(w.Fd()), 2, 0)
	}
	w.Close()
	if err != nil {
		r.Close()
		return func() string { return "" }
	}
	return func() string {
		unix.Dup3(saved, 2, 0)
		unix.Close(saved)
		// Every writer has ended with fusermount3; the deadline guards
		// against one that handed the descriptor on.
		r.SetReadDeadline(time.Now().Add(time.Second))
		out, _ := io.ReadAll(r)
		r.Close()
		return strings.TrimSpace(string(out))
	}
}
