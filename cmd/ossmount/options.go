package main

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/cache"
)

// options are the -o settings of a mount.
type options struct {
	Endpoint     string
	Region       string
	PathStyle    bool
	CacheDir     string
	StorageClass string
	ACL          string
	Debug        bool
	UID, GID     int64 // -1: the mounting user
	Umask        uint32
	// RootUmask (ossfs's mp_umask) is the mount root's; nil: Umask.
	RootUmask  *uint32
	AllowOther bool
	ReadOnly   bool
	// MountFlags are the kernel's mount flags asked for (noexec, nosuid,
	// ...), in order; without them the mount is nosuid and nodev.
	MountFlags       []string
	StatTTL          time.Duration
	ForbidOverwrite  bool
	PasswdFile       string
	PartSize         int64
	Parallel         int
	LogFile          string
	DirRenameLimit   int
	Writeback        bool
	WritebackDelay   time.Duration
	WritebackWorkers int
	// WritebackAttempts bounds the tries before an upload is given up
	// for now (tried again later, at its fsync and at unmount).
	WritebackAttempts int
	CacheSize         int64
	KeptSize          int64 // -1: the default (cache.Dir.SetKeptBudget)
	EnsureDiskFree    int64 // -1: the default (cache.Dir.DefaultMinFree)
	// ConnectTimeout, ReadWriteTimeout and RequestAttempts (tries of one
	// request) tune the SDK's HTTP client; 0: its defaults.
	ConnectTimeout, ReadWriteTimeout time.Duration
	RequestAttempts                  int
	SkipCertificateCheck             bool
	RAMRole                          string
	SSE, SSEKeyID                    string
	Tagging                          string
}

// cacheDir is -o cache_dir, or the default.
func (o options) cacheDir() string { return cmp.Or(o.CacheDir, cache.DefaultPath()) }

func defaultOptions() options {
	return options{UID: -1, GID: -1, Umask: 0o022, StatTTL: 2 * time.Second, DirRenameLimit: 1000,
		WritebackDelay: 20 * time.Millisecond, WritebackWorkers: 16, WritebackAttempts: 5, Parallel: 4, KeptSize: -1,
		EnsureDiskFree: -1}
}

// parseOptions applies a comma-separated "-o" list to o. Unknown options
// are returned so the caller can warn once about each.
func parseOptions(o *options, list string) (unknown []string, err error) {
	for _, opt := range strings.Split(list, ",") {
		opt = strings.TrimSpace(opt)
		if opt == "" {
			continue
		}
		name, value, hasValue := strings.Cut(opt, "=")
		need := func() error {
			if !hasValue || value == "" {
				return fmt.Errorf("option %s needs a value (%s=...)", name, name)
			}
			return nil
		}
		switch name {
		case "endpoint", "url":
			err = need()
			o.Endpoint = value
		case "region":
			err = need()
			o.Region = value
		case "path_style", "use_path_request_style":
			o.PathStyle, err = parseBool(value, hasValue)
		case "cache_dir", "use_cache":
			err = need()
			o.CacheDir = value
		case "storage_class":
			err = need()
			o.StorageClass = value
		case "acl", "default_acl":
			err = need()
			o.ACL = value
		case "debug":
			o.Debug = true
		case "dbglevel": // ossfs: crit, err, warn, info or debug
			// Only its debug is ours: the others would have flooded
			// the log with a line per upload.
			o.Debug = value == "debug" || value == "dbg"
		case "uid":
			o.UID, err = strconv.ParseInt(value, 10, 32)
		case "gid":
			o.GID, err = strconv.ParseInt(value, 10, 32)
		case "umask":
			o.Umask, err = parseUmask(value)
		case "mp_umask": // ossfs: the mount root's umask
			var m uint32
			m, err = parseUmask(value)
			o.RootUmask = &m
		case "allow_other":
			o.AllowOther = true
		case "ro":
			o.ReadOnly = true
		case "rw":
			o.ReadOnly = false
		case "stat_ttl", "stat_cache_expire": // ossfs: in seconds
			o.StatTTL, err = parseSeconds(value)
		case "connect_timeout": // ossfs's, in seconds
			o.ConnectTimeout, err = parseSeconds(value)
		case "readwrite_timeout": // ossfs's, in seconds
			o.ReadWriteTimeout, err = parseSeconds(value)
		case "no_check_certificate": // ossfs's
			o.SkipCertificateCheck, err = parseBool(value, hasValue)
		case "retries": // ossfs's: tries after the first
			var n int
			if n, err = strconv.Atoi(value); err == nil && n < 0 {
				err = fmt.Errorf("%d is not a number of retries", n)
			}
			o.RequestAttempts = n + 1
		case "forbid_overwrite":
			o.ForbidOverwrite, err = parseBool(value, hasValue)
		case "passwd_file":
			err = need()
			o.PasswdFile = value
		case "part_size":
			var n uint64
			n, err = humanize.ParseBytes(value)
			o.PartSize = int64(n)
		case "multipart_size": // ossfs: in MB
			var n int64
			n, err = strconv.ParseInt(value, 10, 64)
			o.PartSize = n << 20
		case "parallel", "parallel_count":
			o.Parallel, err = strconv.Atoi(value)
		case "dir_rename_limit":
			o.DirRenameLimit, err = strconv.Atoi(value)
		case "writeback":
			o.Writeback, err = parseBool(value, hasValue)
		case "writeback_delay":
			o.WritebackDelay, err = time.ParseDuration(value)
		case "writeback_workers":
			o.WritebackWorkers, err = strconv.Atoi(value)
		case "writeback_attempts":
			o.WritebackAttempts, err = strconv.Atoi(value)
		case "cache_size":
			var n uint64
			n, err = humanize.ParseBytes(value)
			o.CacheSize = int64(n)
		case "kept_size":
			var n uint64
			n, err = humanize.ParseBytes(value)
			o.KeptSize = int64(n)
		case "ensure_diskfree": // ossfs: in MB; a unit may be given
			var n uint64
			if n, err = strconv.ParseUint(value, 10, 63); err == nil {
				n <<= 20
			} else {
				n, err = humanize.ParseBytes(value)
			}
			o.EnsureDiskFree = int64(n)
		case "ram_role":
			err = need()
			o.RAMRole = value
		case "sse":
			err = need()
			o.SSE = value
		case "sse_key_id":
			err = need()
			o.SSEKeyID = value
		case "tagging":
			err = need()
			if err == nil {
				o.Tagging, err = bucket.ParseTagging(value)
			}
		case "log_file":
			err = need()
			o.LogFile = value
		case "dev", "nodev", "suid", "nosuid", "exec", "noexec":
			// The kernel's: an fstab line's noexec must hold.
			o.MountFlags = append(o.MountFlags, name)
		case "auto", "noauto", "user", "nouser", "_netdev", "defaults",
			"atime", "noatime", "relatime", "norelatime", "strictatime", "diratime", "nodiratime":
			// fstab and mount(8) options with no meaning here (no
			// access times are kept).
		default:
			unknown = append(unknown, opt)
		}
		if err != nil {
			return nil, fmt.Errorf("option %q: %v", opt, err)
		}
	}
	return unknown, nil
}

// parseSeconds reads a duration: "1.5" (seconds, as ossfs) or "1500ms".
func parseSeconds(value string) (time.Duration, error) {
	if d, err := time.ParseDuration(value); err == nil {
		return d, nil
	}
	secs, err := strconv.ParseFloat(value, 64)
	if err != nil || secs < 0 {
		return 0, fmt.Errorf("%q is not a duration", value)
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// parseUmask reads an octal umask.
func parseUmask(value string) (uint32, error) {
	m, err := strconv.ParseUint(value, 8, 32)
	return uint32(m) & 0o777, err
}

func parseBool(value string, hasValue bool) (bool, error) {
	if !hasValue {
		return true, nil
	}
	return strconv.ParseBool(value)
}
