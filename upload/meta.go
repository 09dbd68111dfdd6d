package upload

import (
	"strconv"
	"strings"
	"time"
)

// Metadata is what ossmount keeps of a file's attributes in user metadata,
// in the encoding ossfs and s3fs read and write (DESIGN §4):
// x-oss-meta-mode (decimal st_mode with type bits), -uid, -gid, -rdev (a
// device's number, decimal, only for devices), and -mtime, -atime, -ctime
// as seconds since the epoch with an optional "." and nine digits of
// nanoseconds.
type Metadata struct {
	Mode  uint32 // st_mode including the type bits
	UID   uint32
	GID   uint32
	Rdev  uint32 // a device node's number (Linux encoding), else 0
	Mtime time.Time
	Atime time.Time
	Ctime time.Time
}

// Metadata header names, without the x-oss-meta- prefix.
const (
	metaMode  = "mode"
	metaUID   = "uid"
	metaGID   = "gid"
	metaRdev  = "rdev"
	metaMtime = "mtime"
	metaAtime = "atime"
	metaCtime = "ctime"
)

// Encode returns the user metadata for m. Zero times are left out.
func (m Metadata) Encode() map[string]string {
	out := map[string]string{
		metaMode: strconv.FormatUint(uint64(m.Mode), 10),
		metaUID:  strconv.FormatUint(uint64(m.UID), 10),
		metaGID:  strconv.FormatUint(uint64(m.GID), 10),
	}
	if m.Rdev != 0 {
		out[metaRdev] = strconv.FormatUint(uint64(m.Rdev), 10)
	}
	for name, t := range map[string]time.Time{metaMtime: m.Mtime, metaAtime: m.Atime, metaCtime: m.Ctime} {
		if !t.IsZero() {
			out[name] = FormatTime(t)
		}
	}
	return out
}

// DecodeMetadata reads user metadata (keys lower-case, without the prefix);
// what is missing or unreadable keeps its value from def.
func DecodeMetadata(meta map[string]string, def Metadata) Metadata {
	m := def
	readUint := func(name string, dst *uint32) {
		if v, err := strconv.ParseUint(meta[name], 10, 32); err == nil {
			*dst = uint32(v)
		}
	}
	readUint(metaMode, &m.Mode)
	readUint(metaUID, &m.UID)
	readUint(metaGID, &m.GID)
	readUint(metaRdev, &m.Rdev)
	readTime := func(name string, dst *time.Time) {
		if t, ok := ParseTime(meta[name]); ok {
			*dst = t
		}
	}
	readTime(metaMtime, &m.Mtime)
	readTime(metaAtime, &m.Atime)
	readTime(metaCtime, &m.Ctime)
	return m
}

// FormatTime encodes t as seconds since the epoch, followed by "." and
// exactly nine digits of nanoseconds when they are not zero.
func FormatTime(t time.Time) string {
	s := strconv.FormatInt(t.Unix(), 10)
	if ns := t.Nanosecond(); ns != 0 {
		s += "." + leftPad(strconv.Itoa(ns), 9)
	}
	return s
}

// ParseTime reads what FormatTime writes. A fraction of another length is
// read as a decimal fraction of a second (".5" is 500ms), not as raw
// nanoseconds as ossfs does.
func ParseTime(s string) (time.Time, bool) {
	secStr, frac, hasFrac := strings.Cut(strings.TrimSpace(s), ".")
	sec, err := strconv.ParseInt(secStr, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	var ns int64
	if hasFrac && frac != "" {
		if len(frac) > 9 {
			frac = frac[:9]
		}
		frac += strings.Repeat("0", 9-len(frac))
		if ns, err = strconv.ParseInt(frac, 10, 64); err != nil || ns < 0 {
			return time.Time{}, false
		}
	}
	return time.Unix(sec, ns), true
}

func leftPad(s string, n int) string {
	if len(s) >= n {
		return s
	}
	return strings.Repeat("0", n-len(s)) + s
}
