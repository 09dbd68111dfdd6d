package fs

import (
	"context"
	"slices"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Reading a directory. The kernel reads with READDIRPLUS only (go-fuse
// does not ask for its adaptive mode) and has every entry it reads looked
// up there and then. A lookup of an object the mount knows nothing fresh
// about is a HEAD (a listing has no user metadata: mode, owner, mtime),
// of a directory a one-key listing and the marker's HEAD — so a plain
// `ls`, a shell glob or tab completion in a directory of 20,000 objects
// another client wrote was 20,000 HEADs, the complaint users of s3fs and
// geesefs file most. An open directory answers those lookups only from
// what the mount knows fresh; any other entry goes out with its name and
// type alone (the kernel takes an entry without a node ID as "no
// attributes", not as absent), and a program that wants more stats it —
// `ls -l`, `find`, `du` — which is a lookup by name, asked ahead
// (prefetch.go).
//
// typeUnknown is the type of a small listed object: a file, a symlink or
// a FIFO alike until its metadata is read (DT_UNKNOWN, which find and fts
// stat). A directory (a common prefix), a file of this mount not uploaded
// yet and an object larger than a symlink's target can be (listedType)
// are known for what they are.
const typeUnknown = 0

// maxLinkTarget is the most a symbolic link's object holds: its target, at
// most PATH_MAX less the NUL (the kernel refuses longer ones, and FUSE
// reads a link into one page). Special files are empty objects.
const maxLinkTarget = 4095

// listedType is the type readdir gives a listed object of size bytes: one
// larger than any link target can only be a regular file, so that
// `find -type f` and other walkers that go by type stat none of a bucket's
// data files (50,000 of them: 50,000 HEADs, 10 s against a local
// server). A smaller one is typeUnknown.
func listedType(size int64) uint32 {
	if size > maxLinkTarget {
		return syscall.S_IFREG
	}
	return typeUnknown
}

func (d *dirNode) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return &dirHandle{d: d}, 0, 0
}

// dirHandle is an open directory: the entries of the listing its first
// read made, served in order.
type dirHandle struct {
	d       *dirNode
	entries []fuse.DirEntry // nil until the first read
	next    int             // index of the next entry to read
}

var (
	_ = (gofs.FileReaddirenter)((*dirHandle)(nil))
	_ = (gofs.FileSeekdirer)((*dirHandle)(nil))
	_ = (gofs.FileLookuper)((*dirHandle)(nil))
)

// load lists the directory on the first read or seek, not at opendir: a
// program opens directories to openat or fchdir below them as well.
func (h *dirHandle) load(ctx context.Context) syscall.Errno {
	if h.entries != nil {
		return 0
	}
	if entries := h.d.keptEntries(); entries != nil {
		h.entries = append(h.d.dots(), entries...)
		return 0
	}
	ctx = uninterrupted(ctx)
	keys := h.d.fsys.holdKeys("a listing")
	defer keys.letGo()
	// Listed while a rename ran, the entries are still an answer the
	// directory gave during the readdir, as a local file system's may be.
	entries, errno, _, _ := h.d.list(ctx, keys, 0)
	if errno != 0 {
		return errno
	}
	h.entries = append(h.d.dots(), entries...)
	return 0
}

// keptEntries returns the entries of d's last listing if it is fresh and
// this mount has changed nothing in the directory since, nil otherwise: a
// read of the directory then asks nothing, as a lookup in it does not.
// Each readdir listed it again — `git status` over a tree lists each
// directory that its lstats, a moment before, had listed on demand.
// Other clients' changes show after stat_ttl, as with lookups. The
// lookups that follow the read are followed afresh (listed).
func (d *dirNode) keptEntries() []fuse.DirEntry {
	made, ok := d.fsys.listings.Untouched(d.dirKey())
	if !ok {
		return nil
	}
	s := &d.scan
	s.mu.Lock()
	if s.entries == nil || s.made != made {
		s.mu.Unlock()
		return nil
	}
	entries := slices.Clone(s.entries)
	s.mu.Unlock()
	d.listed(entries)
	return entries
}

// dots are the entries "." and "..", which the kernel does not make up for
// a FUSE file system: programs count on them (`ls -a`; PHP's
// `count(scandir($dir)) == 2` for an empty directory), and s3fs and ossfs
// list them too.
func (d *dirNode) dots() []fuse.DirEntry {
	self := d.EmbeddedInode()
	parent := self
	if _, p := self.Parent(); p != nil {
		parent = p
	}
	return []fuse.DirEntry{
		{Name: ".", Mode: syscall.S_IFDIR, Ino: self.StableAttr().Ino},
		{Name: "..", Mode: syscall.S_IFDIR, Ino: parent.StableAttr().Ino},
	}
}

func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if errno := h.load(ctx); errno != 0 {
		return nil, errno
	}
	if h.next >= len(h.entries) {
		return nil, 0
	}
	e := h.entries[h.next]
	h.next++
	e.Off = uint64(h.next)
	return &e, 0
}

// Seekdir goes back to an offset a read gave (rewinddir: 0) in the same
// listing.
func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if errno := h.load(ctx); errno != 0 {
		return errno
	}
	if off > uint64(len(h.entries)) {
		return syscall.EINVAL
	}
	h.next = int(off)
	return 0
}

// Lookup is the lookup of the entry just read, for READDIRPLUS: answered
// when it costs no request, else declined (the errno only tells go-fuse
// to send the entry without attributes).
func (h *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if !h.d.knowsFresh(name) {
		return nil, syscall.EAGAIN
	}
	return h.d.Lookup(ctx, name, out)
}

// knowsFresh reports whether a lookup of name would ask the bucket
// nothing: its node is held and is a file not uploaded yet, or was made or
// found less than stat_ttl ago.
func (d *dirNode) knowsFresh(name string) bool {
	ch := d.child(name)
	if ch == nil {
		return false
	}
	if fn, ok := ch.Operations().(*fileNode); ok && fn.isLocal() {
		return true
	}
	n, ok := ch.Operations().(freshNode)
	return ok && n.fresh()
}
