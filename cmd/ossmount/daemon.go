package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// readyFDEnv names the descriptor on which a mount reports whether it
// worked: "ok\n" once mounted, or the error text. The detaching parent
// passes it to its child; tests pass it to a foreground mount.
const readyFDEnv = "OSSMOUNT_READY_FD"

// detachedEnv tells the child it has no terminal to log to.
const detachedEnv = "OSSMOUNT_DETACHED"

// detach re-runs ossmount in the foreground in a new session and waits
// until the child reports; it returns the exit status for the parent.
func detach(args []string) int {
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ossmount:", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ossmount:", err)
		return 1
	}
	cmd := exec.Command(self, append([]string{"-f"}, args...)...)
	cmd.Env = append(os.Environ(), readyFDEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	// The child keeps no descriptor of ours open, or whoever reads our
	// output would wait for the mount to end. Errors before the mount is
	// ready come back through the pipe; logs go to -o log_file or syslog.
	cmd.Env = append(cmd.Env, detachedEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "ossmount:", err)
		return 1
	}
	w.Close()
	msg, _ := io.ReadAll(r)
	if strings.TrimSpace(string(msg)) == "ok" {
		return 0
	}
	if len(msg) == 0 {
		state, _ := cmd.Process.Wait()
		fmt.Fprintf(os.Stderr, "ossmount: the mount process ended before mounting (%v)\n", state)
		return 2
	}
	fmt.Fprintf(os.Stderr, "ossmount: %s", msg)
	cmd.Process.Wait()
	return 2
}

// readyPipe is where a foreground mount reports its result, if anywhere.
type readyPipe struct{ f *os.File }

func openReadyPipe() readyPipe {
	fd, err := strconv.Atoi(os.Getenv(readyFDEnv))
	if err != nil || fd < 3 {
		return readyPipe{}
	}
	os.Unsetenv(readyFDEnv)
	return readyPipe{os.NewFile(uintptr(fd), "ready")}
}

func (p readyPipe) report(err error) {
	if p.f == nil {
		return
	}
	if err == nil {
		fmt.Fprintln(p.f, "ok")
	} else {
		fmt.Fprintln(p.f, err)
	}
	p.f.Close()
}
