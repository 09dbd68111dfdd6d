package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseOptions(t *testing.T) {
	o := defaultOptions()
	unknown, err := parseOptions(&o, "url=http://h:1,path_style,cache_dir=/c,storage_class=IA,default_acl=private,uid=5,gid=6,umask=027,stat_ttl=1.5,multipart_size=16,parallel_count=4,allow_other,ro,nodev,mystery=1")
	if err != nil {
		t.Fatal(err)
	}
	if o.Endpoint != "http://h:1" || !o.PathStyle || o.CacheDir != "/c" || o.StorageClass != "IA" || o.ACL != "private" ||
		o.UID != 5 || o.GID != 6 || o.Umask != 0o027 || o.StatTTL != 1500*time.Millisecond || o.PartSize != 16<<20 ||
		o.Parallel != 4 || !o.AllowOther || !o.ReadOnly {
		t.Fatalf("parsed %+v", o)
	}
	if strings.Join(unknown, ",") != "mystery=1" {
		t.Fatalf("unknown = %v", unknown)
	}
	// ossfs's spellings: its stat cache's expiry in seconds; a log level of
	// its, only "debug" of which is ossmount's debug logging.
	if _, err := parseOptions(&o, "stat_cache_expire=60,dbglevel=info"); err != nil || o.StatTTL != time.Minute || o.Debug {
		t.Fatalf("stat_cache_expire, dbglevel=info: %v %v %v", err, o.StatTTL, o.Debug)
	}
	if o.RootUmask != nil {
		t.Errorf("no mp_umask: the root's umask is %v, want umask's", *o.RootUmask)
	}
	if _, err := parseOptions(&o, "mp_umask=007"); err != nil || o.RootUmask == nil || *o.RootUmask != 0o007 {
		t.Fatalf("mp_umask=007: %v %v", err, o.RootUmask)
	}
	if _, err := parseOptions(&o, "dbglevel=debug"); err != nil || !o.Debug {
		t.Fatalf("dbglevel=debug: %v %v", err, o.Debug)
	}
	if _, err := parseOptions(&o, "part_size=16MiB"); err != nil || o.PartSize != 16<<20 {
		t.Fatalf("part_size: %v %d", err, o.PartSize)
	}
	for value, want := range map[string]int64{"1024": 1 << 30, "512MiB": 512 << 20} {
		if _, err := parseOptions(&o, "ensure_diskfree="+value); err != nil || o.EnsureDiskFree != want {
			t.Errorf("ensure_diskfree=%s: %v %d", value, err, o.EnsureDiskFree)
		}
	}
	if o.KeptSize != -1 {
		t.Errorf("kept_size unset: %d, want -1 (the default)", o.KeptSize)
	}
	for value, want := range map[string]int64{"0": 0, "2GiB": 2 << 30} {
		if _, err := parseOptions(&o, "kept_size="+value); err != nil || o.KeptSize != want {
			t.Errorf("kept_size=%s: %v %d", value, err, o.KeptSize)
		}
	}
	// The kernel's flags go to the mount; access-time ones are no unknown.
	// ossfs's network options, in seconds.
	timeouts := defaultOptions()
	if unknown, err := parseOptions(&timeouts, "connect_timeout=5,readwrite_timeout=1.5,retries=4,no_check_certificate"); err != nil || len(unknown) != 0 ||
		!timeouts.SkipCertificateCheck ||
		timeouts.ConnectTimeout != 5*time.Second || timeouts.ReadWriteTimeout != 1500*time.Millisecond || timeouts.RequestAttempts != 5 {
		t.Errorf("timeouts: %v %v %+v", err, unknown, timeouts)
	}
	flags := defaultOptions()
	if unknown, err := parseOptions(&flags, "nosuid,noexec,noatime,nodev,relatime"); err != nil || len(unknown) != 0 ||
		strings.Join(flags.MountFlags, ",") != "nosuid,noexec,nodev" {
		t.Errorf("mount flags: %v %v %v", err, unknown, flags.MountFlags)
	}
	if _, err := parseOptions(&o, "tagging=b=2&a=1"); err != nil || o.Tagging != "a=1&b=2" {
		t.Errorf("tagging: %v %q", err, o.Tagging)
	}
	for _, bad := range []string{"uid=x", "endpoint", "stat_ttl=soon", "part_size=lots", "ensure_diskfree=much", "kept_size=some", "tagging=k=%zz", "retries=-1", "connect_timeout=soon"} {
		if _, err := parseOptions(&o, bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseArgs(t *testing.T) {
	a, err := parseArgs([]string{"my-bucket:/a/b/", "/mnt", "-o", "endpoint=http://x", "-f"})
	if err != nil || a.bucket != "my-bucket" || a.prefix != "a/b/" || a.mountpoint != "/mnt" || !a.foreground {
		t.Fatalf("%+v %v", a, err)
	}
	// As mount(8) runs a helper: flags it passes are accepted, fstab
	// options ignored.
	if a, err := parseArgs([]string{"b-1", "/m", "-n", "-o", "rw,nosuid,nodev,_netdev,endpoint=http://x"}); err != nil || a.opts.Endpoint != "http://x" || len(a.unknown) != 0 {
		t.Fatalf("mount helper form: %+v %v", a, err)
	}
	if a, err := parseArgs([]string{"b-1", "/m", "-oregion=cn-beijing"}); err != nil || a.opts.Endpoint != "oss-cn-beijing.aliyuncs.com" {
		t.Fatalf("region endpoint: %+v %v", a.opts, err)
	}
	for _, bad := range [][]string{{"Bad", "/m", "-o", "endpoint=x"}, {"ok-bucket", "/m"}, {"ok-bucket"}, {"ok-bucket:\\p", "/m", "-o", "endpoint=x"}} {
		if _, err := parseArgs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestPasswdFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "passwd")
	os.WriteFile(p, []byte("# comment\nid0:secret0\nother:id1:secret1\nmine:id2:secret2\n"), 0o600)
	c, err := readPasswdFile(p, "mine", false)
	if err != nil || c.AccessKeyID != "id2" || c.AccessKeySecret != "secret2" {
		t.Fatalf("%v %v", c, err)
	}
	if c, err = readPasswdFile(p, "unlisted", false); err != nil || c.AccessKeyID != "id0" {
		t.Fatalf("fallback: %v %v", c, err)
	}
	if strings.Contains(c.String(), "secret0") {
		t.Fatalf("String shows the secret: %s", c)
	}
	for mode, ok := range map[os.FileMode]bool{0o600: true, 0o400: true, 0o640: false, 0o604: false, 0o700: false} {
		os.Chmod(p, mode)
		if _, err := readPasswdFile(p, "mine", false); (err == nil) != ok {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
	os.Chmod(p, 0o640)
	if _, err := readPasswdFile(p, "mine", true); err != nil {
		t.Errorf("system-wide file with group read: %v", err)
	}
}
