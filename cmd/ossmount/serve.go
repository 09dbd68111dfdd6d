package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/cache"
	"github.com/ossmount/ossmount/fs"
	"github.com/ossmount/ossmount/upload"
)

// serve checks the bucket, mounts, reports readiness and serves until
// unmounted. Errors before the mount is up are returned.
func serve(a mountArgs, log *slog.Logger, logs *logFile, ready readyPipe) error {
	o := a.opts
	if err := checkMountpoint(a.mountpoint, log); err != nil {
		return err
	}
	// An ECS RAM role, when given, is the credentials' source.
	var creds *bucket.Credentials
	roleURL := ramRoleURL(o.RAMRole)
	if roleURL == "" {
		var err error
		if creds, err = loadCredentials(o, a.bucket); err != nil {
			return err
		}
	}
	partSize := o.PartSize
	if partSize <= 0 {
		partSize = upload.DefaultPartSize
	}
	encryption, err := bucket.ParseEncryption(o.SSE, o.SSEKeyID)
	if err != nil {
		return err
	}
	cd, err := cache.OpenDir(o.cacheDir(), o.CacheSize)
	if err != nil {
		return err
	}
	defer cd.Close()
	cfg := bucket.Config{Bucket: a.bucket, Endpoint: o.Endpoint, Region: o.Region, PathStyle: o.PathStyle,
		Credentials: creds, RAMRoleURL: roleURL, PartSize: partSize, Parallel: o.Parallel, Encryption: encryption, Tagging: o.Tagging,
		ConnectTimeout: o.ConnectTimeout, ReadWriteTimeout: o.ReadWriteTimeout, RetryMaxAttempts: o.RequestAttempts,
		SkipCertificateCheck: o.SkipCertificateCheck}
	if o.SkipCertificateCheck {
		log.Warn("no_check_certificate: the server's TLS certificate is not checked; anyone on the network path can read and change the data")
	}
	var multiparts *cache.Multiparts
	if !o.ReadOnly {
		// Any later mount of the bucket, whatever its prefix, cleans up.
		if multiparts, err = cache.OpenMultiparts(cd.Path(), namespace(o.Endpoint, a.bucket), log); err != nil {
			return err
		}
		defer multiparts.Close()
		cfg.Multiparts = multiparts
	}
	b := bucket.NewOSS(cfg)
	if err := checkBucket(b, a.prefix, o.Endpoint); err != nil {
		return err
	}
	cd.SetLogger(log)
	minFree := o.EnsureDiskFree
	if minFree < 0 {
		// Only a write-back backlog grows without bound; in sync mode
		// staging holds what programs are writing, as a local disk
		// would, and a reserve would refuse a small file on a disk with
		// room for it.
		minFree = 0
		if o.Writeback {
			minFree = cd.DefaultMinFree()
		}
	}
	cd.SetMinFree(minFree)
	if _, free, err := cd.DiskSpace(); err == nil && free < minFree {
		log.Warn("the cache disk has less free space than ensure_diskfree: writes fail with ENOSPC (or, in write-back mode, wait for uploads) until space is freed; free some, lower ensure_diskfree or move cache_dir",
			"cache_dir", cd.Path(), "free", humanize.IBytes(uint64(free)), "ensure_diskfree", humanize.IBytes(uint64(minFree)))
	}
	var journal *cache.Journal
	var bk bucket.Bucket = b
	if o.Writeback {
		if journal, err = cd.EnableWriteback(namespace(o.Endpoint, a.bucket, a.prefix)); err != nil {
			return err
		}
		bk = upload.SettleFirst(b, journal)
	}
	uploader := upload.New(bk, upload.Config{StorageClass: o.StorageClass, ACL: o.ACL, ForbidOverwrite: o.ForbidOverwrite,
		PartSize: o.PartSize, Parallel: o.Parallel}, log)
	// A kept copy pays twice for a file of two parts or more: no download
	// at the next edit, and an upload that copies what it leaves alone.
	cd.SetKeepMin(min(cache.KeepMin, 2*uploader.PartSize()))
	if o.KeptSize >= 0 {
		cd.SetKeptBudget(o.KeptSize)
	}
	// Copies kept at the unmount are taken again by the next mount of the
	// bucket (whatever its prefix: they are filed by key).
	if err := cd.PersistKept(namespace(o.Endpoint, a.bucket)); err != nil {
		log.Warn("cannot keep copies across mounts in the cache directory", "err", err)
	} else if files, bytes := cd.Kept(); files > 0 {
		log.Info("copies of objects kept by an earlier mount, checked at their first use", "files", files, "bytes", humanize.IBytes(uint64(bytes)))
	}
	if o.CacheSize > 0 && o.CacheSize < 2*uploader.PartSize() {
		// A stream starts once a file holds more than one part, and a
		// writer short of room then waits for a part to leave the cache.
		log.Warn("cache_size is under two parts: a file written in order that is larger than the cache cannot stream through it, and fails with ENOSPC; raise cache_size or lower part_size",
			"cache_size", humanize.IBytes(uint64(o.CacheSize)), "part_size", humanize.IBytes(uint64(uploader.PartSize())))
	}
	var queue *upload.Queue
	if journal != nil {
		if queue, err = startQueue(cd, journal, uploader, a, log); err != nil {
			return err
		}
	}
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	if o.UID >= 0 {
		uid = uint32(o.UID)
	}
	if o.GID >= 0 {
		gid = uint32(o.GID)
	}
	fsys := fs.New(fs.Config{
		Bucket:          bk,
		Uploader:        uploader,
		Queue:           queue,
		Cache:           cd,
		Log:             log,
		Prefix:          a.prefix,
		UID:             uid,
		GID:             gid,
		Umask:           o.Umask,
		RootUmask:       o.RootUmask,
		ForbidOverwrite: o.ForbidOverwrite,
		DirRenameLimit:  o.DirRenameLimit,
		StatTTL:         o.StatTTL,
	})
	ttl := o.StatTTL
	mountOpts := &gofs.Options{
		MountOptions: fuse.MountOptions{
			FsName:            "ossmount:" + a.bucket,
			Name:              "ossmount",
			AllowOther:        o.AllowOther,
			MaxWrite:          1 << 20,
			DirectMount:       os.Geteuid() == 0,
			ExtraCapabilities: fs.Capabilities,
			// FUSE protocol tracing, a developer's aid.
			Debug: os.Getenv("OSSMOUNT_FUSE_DEBUG") != "",
		},
		EntryTimeout:    &ttl,
		AttrTimeout:     &ttl,
		NegativeTimeout: &ttl,
		// Not 0: tools take inode 0 for "no inode" (`ls -i` shows "?").
		// go-fuse numbers the other nodes from 1<<63 up.
		RootStableAttr: &gofs.StableAttr{Ino: 1},
	}
	if o.ReadOnly {
		mountOpts.MountOptions.Options = append(mountOpts.MountOptions.Options, "ro")
	}
	// go-fuse turns these into mount(2) flags, as fusermount3 does (which
	// refuses suid and dev to other users than root).
	mountOpts.MountOptions.Options = append(mountOpts.MountOptions.Options, o.MountFlags...)
	if o.AllowOther {
		// Other users are let in: the kernel checks each one against
		// the files' modes and owners, which ossmount does not. Without
		// it, any user could read a 0600 file and replace or delete
		// anyone's. (Without allow_other only the mounting user gets in.)
		mountOpts.MountOptions.Options = append(mountOpts.MountOptions.Options, "default_permissions")
	}
	cleaner := beforeMount(a.mountpoint)
	said := captureStderr()
	server, err := gofs.Mount(a.mountpoint, fsys.Root(), mountOpts)
	if out := said(); out != "" {
		if err != nil {
			err = fmt.Errorf("%s", out)
		} else {
			fmt.Fprintln(os.Stderr, out) // not ours to swallow
		}
	}
	if err != nil {
		cleaner.clean(log)
		return fmt.Errorf("mount %s: %v", a.mountpoint, strings.TrimSpace(err.Error()))
	}
	// Signals are caught before readiness is reported, so that a SIGTERM
	// sent as soon as the mount is up still unmounts cleanly.
	sigs := make(chan os.Signal, 2)
	// SIGHUP too: with the logs in a file it reopens the file (logrotate),
	// else it unmounts, as libfuse does — a foreground mount whose terminal
	// went away died at once, leaving a dead mount behind.
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1)
	log.Info("mounted", "bucket", a.bucket, "prefix", a.prefix, "mountpoint", a.mountpoint, "endpoint", o.Endpoint, "cache_dir", cd.Path(),
		"ensure_diskfree", humanize.IBytes(uint64(minFree)))
	ready.report(nil)
	orphansDone := make(chan struct{})
	go func() {
		defer close(orphansDone)
		if multiparts != nil {
			abortOrphans(b, multiparts, log)
		}
	}()
	// Before the ledger closes (deferred above), so that aborts that
	// failed are in it for the next mount.
	defer func() { <-orphansDone }()

	// Signals stay caught until the process exits: one arriving while it
	// drains or cleans up must not kill it halfway. One after the unmount
	// stops the drain instead (someone will not wait for a server that
	// keeps failing): the files not uploaded are journaled already.
	var unmounted atomic.Bool
	draining, stopDraining := context.WithCancel(context.Background())
	defer stopDraining()
	go func() {
		for s := range sigs {
			switch {
			case s == syscall.SIGUSR1:
				logStatus(log, cd, queue)
			case s == syscall.SIGHUP && logs != nil:
				// logrotate's signal; a hangup matters only to logs on a
				// terminal, and those are not in a file.
				if err := logs.Reopen(); err != nil {
					log.Error("cannot reopen the log file; logging on in the old one", "path", logs.path, "err", err)
				} else {
					log.Info("reopened the log file", "path", logs.path)
				}
			case s == syscall.SIGHUP && a.detached:
				// No terminal to hang up, no file to reopen: someone
				// meant a reload, not an unmount.
				log.Info("SIGHUP: the logs go to syslog, nothing to reopen")
			case unmounted.Load() && queue != nil:
				log.Warn("stopping the write-back drain; files not uploaded stay journaled for the next mount", "signal", s.String())
				stopDraining()
			case unmounted.Load():
				log.Info("already unmounted; finishing", "signal", s.String())
			default:
				log.Info("unmounting", "signal", s.String())
				unmount(server, a.mountpoint, log)
			}
		}
	}()
	server.Wait()
	unmounted.Store(true)
	fsys.Shutdown(context.Background())
	if queue != nil {
		s := queue.Stats()
		log.Info("draining the write-back queue", "files", s.Queued, "bytes", humanize.IBytes(uint64(s.BytesQueued)))
		if err := queue.Drain(draining); err != nil {
			log.Error("write-back queue not drained", "err", err)
			return fmt.Errorf("%w: %v", errNotDrained, err)
		}
		log.Info("write-back queue drained", "uploaded", queue.Stats().Uploaded)
	}
	uploader.Wait()
	log.Info("unmounted", "mountpoint", a.mountpoint)
	return nil
}

// under reports whether path is dir or lies below it, symbolic links
// resolved as far as path exists.
func under(path, dir string) bool {
	path, dir = resolvePath(path), resolvePath(dir)
	return path == dir || strings.HasPrefix(path, dir+string(filepath.Separator))
}

// errNotDrained ends a mount that unmounted with uploads not done (logged
// already): the exit status says so, but the mount did not fail.
var errNotDrained = errors.New("write-back queue not drained")

// namespace names a bucket's place in the cache directory: the bucket,
// and a hash of the endpoint, the bucket and what else tells mounts apart
// (the write-back journal's: the prefix).
func namespace(endpoint, bucket string, more ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(append([]string{endpoint, bucket}, more...), "\x00")))
	return bucket + "-" + hex.EncodeToString(sum[:6])
}

// startQueue removes staged files whose close was never acknowledged and
// starts the queue with whatever an earlier mount left journaled.
func startQueue(cd *cache.Dir, journal *cache.Journal, u *upload.Uploader, a mountArgs, log *slog.Logger) (*upload.Queue, error) {
	recs, err := journal.Load()
	if err != nil {
		return nil, err
	}
	if n := cd.RemoveUnjournaled(recs); n > 0 {
		log.Info("removed staged files no journal record names (closes never acknowledged, idle and spare files)", "files", n)
	}
	q := upload.NewQueue(u, journal, log, upload.QueueConfig{Workers: a.opts.WritebackWorkers, Delay: a.opts.WritebackDelay, MaxAttempts: a.opts.WritebackAttempts,
		Released: cd.Freed})
	cd.SetEvictable(q.Hurry)
	if len(recs) > 0 {
		log.Info("replaying the write-back journal", "files", len(recs))
		if err := q.Replay(cd, recs); err != nil {
			log.Error("some journaled files could not be replayed", "err", err)
		}
	}
	return q, nil
}

// abortOrphans aborts the multipart uploads that mounts of this bucket
// started and did not end before they died (cache.Multiparts): their
// parts would otherwise stay on the server, billed and invisible.
func abortOrphans(b bucket.Multipart, mp *cache.Multiparts, log *slog.Logger) {
	o, err := mp.Orphans()
	if err != nil {
		log.Warn("cannot read the multipart ledgers of earlier mounts", "err", err)
		return
	}
	var left []cache.Upload
	var aborted []string
	for _, u := range o.Uploads {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := b.AbortMultipart(ctx, u.Key, u.ID)
		cancel()
		switch {
		case err == nil:
			aborted = append(aborted, u.Key)
			log.Debug("aborted a multipart upload an earlier mount left", "key", u.Key)
		case errors.Is(err, bucket.ErrNotFound):
			// Completed or aborted after all, its end not recorded.
		default:
			log.Warn("cannot abort a multipart upload an earlier mount left; the next mount tries again", "key", u.Key, "err", err)
			left = append(left, u)
		}
	}
	mp.Settle(o, left)
	if len(aborted) > 0 {
		log.Info("aborted multipart uploads that earlier mounts died before finishing", "uploads", len(aborted), "first_key", aborted[0])
	}
}

// logStatus answers SIGUSR1.
func logStatus(log *slog.Logger, cd *cache.Dir, q *upload.Queue) {
	keptFiles, keptBytes := cd.Kept()
	attrs := []any{"staged", humanize.IBytes(uint64(cd.Used())), "staging_files", cd.Open(),
		"kept_files", keptFiles, "kept_bytes", humanize.IBytes(uint64(keptBytes))}
	if q != nil {
		s := q.Stats()
		attrs = append(attrs, "queued", s.Queued, "queued_bytes", humanize.IBytes(uint64(s.BytesQueued)), "running", s.Running,
			"uploaded", s.Uploaded, "uploaded_bytes", humanize.IBytes(uint64(s.BytesUploaded)), "failures", s.Failures, "gave_up", s.GaveUp)
	}
	log.Info("status", attrs...)
}

// unmount asks the kernel to unmount. While files are open that fails
// (EBUSY); then the mount is detached lazily: it leaves the namespace at
// once, and the kernel finishes the open files (their flushes upload)
// before it closes the connection and serve returns.
func unmount(server *fuse.Server, mountpoint string, log *slog.Logger) {
	if err := server.Unmount(); err == nil {
		return
	} else {
		log.Warn("unmount failed; detaching, open files finish first", "err", err)
	}
	if err := lazyUnmount(mountpoint); err != nil {
		log.Error("lazy unmount failed", "mountpoint", mountpoint, "err", err)
	}
}

// checkBucket makes one listing request so that a wrong endpoint, bucket or
// key fails the mount with a readable message instead of every operation.
func checkBucket(b *bucket.OSS, prefix, endpoint string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := b.List(ctx, bucket.ListRequest{Prefix: prefix, MaxKeys: 1})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, bucket.ErrNoSuchBucket):
		return fmt.Errorf("bucket %q does not exist at %s", b.Name(), endpoint)
	case errors.Is(err, bucket.ErrAccessDenied):
		return fmt.Errorf("access to bucket %q denied: check the credentials (%v)", b.Name(), err)
	default:
		return fmt.Errorf("cannot reach %s: %v", endpoint, err)
	}
}
