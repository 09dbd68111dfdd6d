package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ossmount/ossmount/bucket"
)

// loadCredentials finds the access key: the -o passwd_file, the
// OSS_ACCESS_KEY_ID/OSS_ACCESS_KEY_SECRET environment, then ossfs's
// ~/.passwd-ossfs and /etc/passwd-ossfs.
func loadCredentials(o options, bucketName string) (*bucket.Credentials, error) {
	if o.PasswdFile != "" {
		return readPasswdFile(o.PasswdFile, bucketName, false)
	}
	if os.Getenv("OSS_ACCESS_KEY_ID") != "" {
		return &bucket.Credentials{AccessKeyID: os.Getenv("OSS_ACCESS_KEY_ID"),
			AccessKeySecret: os.Getenv("OSS_ACCESS_KEY_SECRET"), SessionToken: os.Getenv("OSS_SESSION_TOKEN")}, nil
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, ".passwd-ossfs")
		if _, err := os.Stat(p); err == nil {
			return readPasswdFile(p, bucketName, false)
		}
	}
	if _, err := os.Stat("/etc/passwd-ossfs"); err == nil {
		return readPasswdFile("/etc/passwd-ossfs", bucketName, true)
	}
	return nil, fmt.Errorf("no credentials: set OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET, or use -o passwd_file=FILE")
}

// readPasswdFile reads "bucket:id:secret" or "id:secret" lines. A file that
// others may read is refused, as ossfs does: no permission for others, at
// most read for the group (only for the system-wide file), no execute.
func readPasswdFile(path, bucketName string, systemWide bool) (*bucket.Credentials, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	perm := fi.Mode().Perm()
	groupAllowed := os.FileMode(0)
	if systemWide {
		groupAllowed = 0o040
	}
	if perm&0o007 != 0 || perm&0o070&^groupAllowed != 0 || perm&0o111 != 0 {
		return nil, fmt.Errorf("credentials file %s has mode %04o: it must not be accessible by others (use chmod 600)", path, perm)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	defer f.Close()
	var fallback *bucket.Credentials
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, ":")
		switch len(fields) {
		case 2:
			if fallback == nil {
				fallback = &bucket.Credentials{AccessKeyID: fields[0], AccessKeySecret: fields[1]}
			}
		case 3:
			if fields[0] == bucketName {
				return &bucket.Credentials{AccessKeyID: fields[1], AccessKeySecret: fields[2]}, nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	if fallback == nil {
		return nil, fmt.Errorf("credentials file %s has no key for bucket %q", path, bucketName)
	}
	return fallback, nil
}

// ramRoleURL is where the credentials of the ECS RAM role named by -o
// ram_role are: the option is a role name, or (as ossfs takes it) the URL.
func ramRoleURL(role string) string {
	if role == "" || strings.HasPrefix(role, "http://") || strings.HasPrefix(role, "https://") {
		return role
	}
	return bucket.ECSMetadataRoles + role
}
