// Command ossmount mounts an OSS bucket as a file system:
//
//	ossmount [-f] BUCKET[:/PREFIX] MOUNTPOINT [-o opt[,opt...]]
//
// It detaches once the mount is ready; its exit status says whether
// mounting worked (2: bad arguments, unreachable endpoint, missing bucket,
// rejected credentials). -f keeps it in the foreground.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/ossmount/ossmount/cache"
	"github.com/ossmount/ossmount/upload"
)

const usage = `usage: ossmount [-f] BUCKET[:/PREFIX] MOUNTPOINT [-o opt[,opt...]]
       ossmount --help | --version
  -f   stay in the foreground
  -o   options: endpoint=URL, region=R, path_style, cache_dir=DIR,
       storage_class=C, acl=A, sse=AES256|KMS|SM4, sse_key_id=ID,
       tagging=k=v&k2=v2, uid=N, gid=N, umask=022, allow_other, ro,
       stat_ttl=2s, forbid_overwrite, passwd_file=F, ram_role=NAME|URL,
       part_size=16MiB, parallel=N, writeback, writeback_delay=20ms,
       writeback_workers=16, writeback_attempts=5, cache_size=10GiB,
       kept_size=1GiB, ensure_diskfree=MB, dir_rename_limit=1000,
       connect_timeout=10, readwrite_timeout=60, retries=2, no_check_certificate,
       log_file=F, debug`

func main() { os.Exit(run(os.Args[1:])) }

// revision is the commit `make build` stamps (-ldflags -X): the Makefile
// builds with -buildvcs=false, so Go records none.
var revision string

// dialSyslog connects to the system log.
func dialSyslog() (io.WriteCloser, error) {
	return syslog.New(syslog.LOG_DAEMON|syslog.LOG_INFO, "ossmount")
}

// version is the commit the binary was built from.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	v := info.Main.Version
	if revision != "" {
		v = revision
	}
	if rev := settings["vcs.revision"]; rev != "" {
		v = rev[:min(12, len(rev))] + " " + settings["vcs.time"]
		if settings["vcs.modified"] == "true" {
			v += " (modified)"
		}
	}
	return v + " " + info.GoVersion
}

// mountArgs is the parsed command line.
type mountArgs struct {
	foreground bool
	detached   bool // the child of a detaching ossmount: no terminal
	bucket     string
	prefix     string
	mountpoint string
	opts       options
	unknown    []string
}

func parseArgs(args []string) (mountArgs, error) {
	a := mountArgs{opts: defaultOptions()}
	var positional []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch {
		case arg == "-f":
			a.foreground = true
		case arg == "-d" || arg == "--debug":
			a.opts.Debug = true
		case arg == "-n" || arg == "-s" || arg == "-v":
			// Passed by mount(8) to mount helpers (no mtab, sloppy, verbose):
			// `mount -t fuse.ossmount` runs /sbin/mount.fuse.ossmount, a link
			// to this binary, as HELPER BUCKET MOUNTPOINT -o OPTIONS.
		case arg == "-o":
			if i+1 == len(args) {
				return a, errors.New("-o needs a value")
			}
			i++
			unknown, err := parseOptions(&a.opts, args[i])
			if err != nil {
				return a, err
			}
			a.unknown = append(a.unknown, unknown...)
		case strings.HasPrefix(arg, "-o"):
			unknown, err := parseOptions(&a.opts, arg[2:])
			if err != nil {
				return a, err
			}
			a.unknown = append(a.unknown, unknown...)
		case strings.HasPrefix(arg, "-"):
			return a, fmt.Errorf("unknown flag %s", arg)
		default:
			positional = append(positional, arg)
		}
	}
	if len(positional) != 2 {
		return a, errors.New("expected BUCKET[:/PREFIX] and MOUNTPOINT")
	}
	a.bucket, a.prefix, _ = strings.Cut(positional[0], ":")
	a.mountpoint = positional[1]
	if err := upload.ValidateBucket(a.bucket); err != nil {
		return a, err
	}
	prefix, err := upload.NormalizePrefix(a.prefix)
	if err != nil {
		return a, err
	}
	a.prefix = prefix
	if cacheDir := a.opts.cacheDir(); under(cacheDir, a.mountpoint) {
		// Its staging files would be made through the mount itself:
		// every create failed with ENOENT.
		return a, fmt.Errorf("the cache directory %s is inside the mountpoint %s; choose one outside it (-o cache_dir=)", cacheDir, a.mountpoint)
	}
	if a.opts.Endpoint == "" {
		if a.opts.Region == "" {
			return a, errors.New("no endpoint: use -o endpoint=URL (or -o region=R for oss-R.aliyuncs.com)")
		}
		a.opts.Endpoint = "oss-" + a.opts.Region + ".aliyuncs.com"
	}
	return a, nil
}

// minProcs is the fewest Ps ossmount runs with. Answering the kernel is
// latency-bound work that shares the Go scheduler with uploads (HTTP,
// CRC-64) and blocks in syscalls (fsync, reads of /dev/fuse). With one P
// per core, a FUSE handler back from a syscall waits for a P while uploads
// run (the Go scheduler preempts only after 10ms); with more, the kernel's
// scheduler, which favours the thread that just woke, decides. On a 2-core
// machine this made cp -r of 2,000 small files in write-back mode 5–15%
// faster and cost ossmount less CPU (make bench, 2026-11-25).
const minProcs = 8

// setProcs raises GOMAXPROCS to minProcs unless the environment sets it.
func setProcs() {
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < minProcs {
		runtime.GOMAXPROCS(minProcs)
	}
}

func run(args []string) int {
	for _, arg := range args {
		switch arg {
		case "-h", "--help":
			fmt.Println(usage)
			return 0
		case "-V", "--version": // -v is mount(8)'s "verbose"
			fmt.Println("ossmount", version())
			return 0
		}
	}
	a, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ossmount: %v\n%s\n", err, usage)
		return 2
	}
	if !a.foreground {
		for _, u := range a.unknown {
			fmt.Fprintf(os.Stderr, "ossmount: ignoring option with no meaning here: %s\n", u)
		}
		return detach(args)
	}
	ready := openReadyPipe()
	setProcs()
	// Logs on a stderr whose reader went away (`ossmount -f ... | head`)
	// fail instead of killing the mount: a Go program dies of SIGPIPE on
	// fd 2 unless it ignores the signal.
	signal.Ignore(syscall.SIGPIPE)
	a.detached = os.Getenv(detachedEnv) != ""
	os.Unsetenv(detachedEnv)
	log, logFile, closeLog, err := newLogger(a.opts, a.detached, dialSyslog)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ossmount:", err)
		ready.report(err)
		return 2
	}
	defer closeLog()
	for _, u := range a.unknown {
		log.Warn("ignoring option with no meaning here", "option", u)
	}
	if o := a.opts; !o.AllowOther && (o.UID >= 0 && o.UID != int64(os.Geteuid()) || o.GID >= 0 && o.GID != int64(os.Getegid())) {
		// The usual reason to give files another owner is to let that
		// user in, which FUSE does not without allow_other.
		log.Warn("uid= or gid= gives files another owner, but without allow_other only the mounting user may enter the mount",
			"uid", o.UID, "gid", o.GID)
	}
	if path := os.Getenv("OSSMOUNT_CPUPROFILE"); path != "" {
		// A developer's aid for `make bench` investigations.
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if err := serve(a, log, logFile, ready); err != nil {
		if !a.detached {
			fmt.Fprintln(os.Stderr, "ossmount:", err)
		}
		if !errors.Is(err, errNotDrained) {
			log.Error("mount failed", "err", err)
		}
		ready.report(err)
		return 2
	}
	return 0
}

// newLogger logs to -o log_file, else to stderr, or to syslog when
// detached — or, with no syslog to reach (a container), to ossmount.log in
// the cache directory: the logs went nowhere, a detached mount's errors
// with them. file is the log file, if the logs go to one.
func newLogger(o options, detached bool, syslogWriter func() (io.WriteCloser, error)) (_ *slog.Logger, file *logFile, closeFn func(), _ error) {
	level := slog.LevelInfo
	if o.Debug {
		level = slog.LevelDebug
	}
	var w io.Writer = os.Stderr
	closeFn = func() {}
	path := o.LogFile
	if path == "" && detached {
		sl, err := syslogWriter()
		if err == nil {
			w, closeFn = sl, func() { sl.Close() }
		} else {
			dir, err := cache.OwnRoot(o.cacheDir())
			if err != nil {
				return nil, nil, nil, fmt.Errorf("no syslog, and no cache directory for a log file: %w", err)
			}
			path = filepath.Join(dir, "ossmount.log")
		}
	}
	if path != "" {
		f, err := openLogFile(path)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("log file: %w", err)
		}
		w, file, closeFn = f, f, func() { f.Close() }
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), file, closeFn, nil
}
