package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// mountEntry is a mount of /proc/self/mountinfo: its ID and file system
// type ("fuse.ossmount").
type mountEntry struct{ id, fsType string }

// mountsAt returns the mounts at path, each on top of the ones before it
// (never nil without an error), from /proc/self/mountinfo.
func mountsAt(path string) ([]mountEntry, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	mounts := []mountEntry{}
	for _, line := range strings.Split(string(data), "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER
		f := strings.Fields(line)
		if len(f) < 5 || unescapeMountinfo(f[4]) != path {
			continue
		}
		m := mountEntry{id: f[0]}
		if i := slices.Index(f[5:], "-"); i >= 0 && 5+i+1 < len(f) {
			m.fsType = f[5+i+1]
		}
		mounts = append(mounts, m)
	}
	return mounts, nil
}

// resolvePath makes p absolute with its symbolic links resolved as far as
// it exists (a dead mount cannot be resolved; a cache directory may not be
// made yet): as mountinfo shows mountpoints.
func resolvePath(p string) string {
	p, _ = filepath.Abs(p)
	for rest := ""; ; {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Join(real, rest)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return filepath.Join(p, rest)
		}
		p, rest = parent, filepath.Join(filepath.Base(p), rest)
	}
}

// checkMountpoint makes sure the mountpoint is a directory. A dead mount of
// ossmount's there — its process was killed, and every access is
// "transport endpoint is not connected" — is unmounted first: it said
// "not a directory", and the user had to find fusermount3 -u. Another
// program's dead mount is left alone, with what to do.
func checkMountpoint(mountpoint string, log *slog.Logger) error {
	fi, err := os.Stat(mountpoint)
	if errors.Is(err, syscall.ENOTCONN) {
		abs := resolvePath(mountpoint)
		typ := ""
		if mounts, _ := mountsAt(abs); len(mounts) > 0 {
			typ = mounts[len(mounts)-1].fsType
		}
		if typ != "fuse.ossmount" {
			return fmt.Errorf("mountpoint %s is a dead mount of %q (transport endpoint is not connected); unmount it first: fusermount3 -u %s", mountpoint, typ, mountpoint)
		}
		if err := lazyUnmount(abs); err != nil {
			return fmt.Errorf("mountpoint %s is a dead ossmount mount (its process ended without unmounting), and unmounting it failed: %v", mountpoint, err)
		}
		log.Warn("unmounted a dead ossmount mount left at the mountpoint (its process ended without unmounting)", "mountpoint", abs)
		fi, err = os.Stat(mountpoint) // what the dead mount hid
	}
	switch {
	case err != nil:
		return fmt.Errorf("mountpoint: %v", err)
	case !fi.IsDir():
		return fmt.Errorf("mountpoint %s is not a directory", mountpoint)
	}
	return nil
}

// unescapeMountinfo undoes mountinfo's octal escapes of a path (\040 for a
// space, \011, \012, \134).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// failedMountCleaner removes what a failed mount leaves at the mountpoint.
// The kernel may have made the mount before go-fuse failed to bring it up —
// out of descriptors, ossmount could not open the mountpoint to check it —
// and a mount whose server is gone answers every access with "transport
// endpoint is not connected" until someone unmounts it. A mount that was
// at the mountpoint before is never touched.
type failedMountCleaner struct {
	mountpoint string       // absolute, symlinks resolved, as mountinfo shows it
	before     []mountEntry // nil: mountinfo could not be read
}

// beforeMount notes the mounts at mountpoint; call it before mounting.
func beforeMount(mountpoint string) *failedMountCleaner {
	c := &failedMountCleaner{mountpoint: resolvePath(mountpoint)}
	c.before, _ = mountsAt(c.mountpoint)
	return c
}

// clean unmounts a mount the failed attempt left behind.
func (c *failedMountCleaner) clean(log *slog.Logger) {
	if c.before == nil {
		return // nothing to tell ours from another's
	}
	if len(c.before) > 0 {
		// Ours would be on top of another: only detach one seen to be new.
		after, err := mountsAt(c.mountpoint)
		if err != nil {
			log.Warn("cannot tell whether the failed mount left a mount behind; if so, unmount it with fusermount3 -u",
				"mountpoint", c.mountpoint, "err", err)
			return
		}
		if !c.hasNew(after) {
			return
		}
	}
	// Nothing was mounted here before: whatever is now is ours. Reading
	// mountinfo again could fail for the very reason the mount did.
	switch err := lazyUnmount(c.mountpoint); {
	case err == nil:
		log.Info("removed the mount the failed attempt had left", "mountpoint", c.mountpoint)
	case errors.Is(err, syscall.EINVAL):
		// Nothing was mounted.
	default:
		log.Debug("no mount to remove, or it could not be", "mountpoint", c.mountpoint, "err", err)
	}
}

// hasNew says whether after holds a mount that was not there before.
func (c *failedMountCleaner) hasNew(after []mountEntry) bool {
	for _, a := range after {
		if !slices.Contains(c.before, a) {
			return true
		}
	}
	return false
}

// lazyUnmount unmounts lazily: the mount leaves the namespace at once, and the
// kernel finishes what is still open on it first.
func lazyUnmount(mountpoint string) error {
	if os.Geteuid() == 0 {
		return syscall.Unmount(mountpoint, syscall.MNT_DETACH)
	}
	return exec.Command("fusermount3", "-u", "-z", mountpoint).Run()
}
