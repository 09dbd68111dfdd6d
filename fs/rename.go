package fs

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/upload"
)

// renameFlags from renameat2(2); go-fuse passes them through.
const (
	renameNoReplace = 0x1
	renameExchange  = 0x2
)

// Rename moves a file with a server-side copy and a delete (a dirty file is
// uploaded straight to its new name), and a directory by moving every key
// below it, up to Config.DirRenameLimit objects (EXDEV above, so that mv
// falls back to copying). It moves src's place (place.go), which renames
// the keys of everything below with it.
func (d *dirNode) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) (errno syscall.Errno) {
	ctx = uninterrupted(ctx)
	if flags&renameExchange != 0 {
		return syscall.EINVAL
	}
	dst, ok := newParent.(*dirNode)
	if !ok {
		return syscall.EXDEV
	}
	src := d.child(name)
	if src == nil {
		return syscall.ENOENT
	}
	target := dst.child(newName)
	if target == src {
		// A name onto itself (the kernel may ask): nothing to do, and the
		// file's freeze taken for the target would deadlock the move.
		return 0
	}
	// The keys are let go once go-fuse has moved src.
	release := d.fsys.renaming()
	defer func() {
		if errno != 0 {
			release()
			return
		}
		go d.fsys.afterMove(&d.Inode, name, &dst.Inode, newName, src, release)
	}()
	oldPath := upload.Child(d.path(), name)
	newPath := upload.Child(dst.path(), newName)
	if flags&renameNoReplace != 0 {
		if target != nil {
			return syscall.EEXIST
		}
		if exists, err := dst.exists(ctx, newName); err != nil {
			return d.fsys.fail("rename", d.fsys.fileKey(newPath), err)
		} else if exists {
			return syscall.EEXIST
		}
	}

	switch n := src.Operations().(type) {
	case *dirNode:
		if target != nil {
			if _, isDir := target.Operations().(*dirNode); !isDir {
				return syscall.ENOTDIR
			}
			if errno := dst.checkEmpty(ctx, newName); errno != 0 {
				return errno
			}
		}
		if errno := d.fsys.renameDir(ctx, n, oldPath, newPath, target != nil); errno != 0 {
			return errno
		}
	case *fileNode:
		if target != nil {
			if _, isDir := target.Operations().(*dirNode); isDir {
				return syscall.EISDIR
			}
		}
		newKey := d.fsys.fileKey(newPath)
		release, err := holdReplaced(ctx, target)
		if err != nil {
			return d.fsys.fail("rename", newKey, err)
		}
		defer release()
		if errno := d.fsys.checkNewName("rename", newKey); errno != 0 {
			return errno
		}
		// Under the moved file's freeze: writers wait while its staged
		// content is uploaded to the new name, or its job renamed.
		n.freeze.Lock()
		defer n.freeze.Unlock()
		err = d.fsys.removing(ctx, newKey, func(bool) error { return n.moveTo(ctx, d.fsys.fileKey(oldPath), newKey) })
		if err != nil {
			d.fsys.renameFailed(dst, newName)
			return d.fsys.fail("rename", newKey, err)
		}
		if target != nil {
			// The replaced file's object stays until the moved file's
			// queued upload overwrites it: an unlink before then must
			// delete it.
			n.mu.Lock()
			n.inBucket = true
			n.mu.Unlock()
		}
	case *specialNode:
		newKey := d.fsys.fileKey(newPath)
		release, err := holdReplaced(ctx, target)
		if err != nil {
			return d.fsys.fail("rename", newKey, err)
		}
		defer release()
		if errno := d.fsys.checkNewName("rename", newKey); errno != 0 {
			return errno
		}
		n.mu.Lock()
		size := n.size
		n.mu.Unlock()
		err = d.fsys.removing(ctx, newKey, func(bool) error {
			return d.fsys.moveObject(ctx, bucket.CopyRequest{Src: d.fsys.fileKey(oldPath), Dst: newKey, Size: size})
		})
		if err != nil {
			d.fsys.renameFailed(dst, newName)
			return d.fsys.fail("rename", newKey, err)
		}
	default:
		return syscall.EINVAL
	}
	_, srcIsDir := src.Operations().(*dirNode)
	d.entryRemoved(name, srcIsDir)
	dst.fsys.listings.Add(dst.dirKey(), newName, srcIsDir)
	if srcIsDir {
		d.fsys.listings.ForgetBelow(d.fsys.dirKey(oldPath))
		d.fsys.listings.ForgetBelow(d.fsys.dirKey(newPath))
	}
	// The replaced file's pending work must not recreate it.
	if target != nil {
		if fn, ok := target.Operations().(*fileNode); ok {
			fn.forget()
		}
		target.Operations().(placedNode).unplace()
	}
	src.Operations().(placedNode).placeAt(dst, newName)
	// A release while the move held a file's staging file left it; it
	// goes now, under the key it is to be kept by, if at all.
	switch n := src.Operations().(type) {
	case *fileNode:
		n.dropStagingIfIdle()
	case *dirNode:
		for _, below := range filesBelow(n) {
			below.dropStagingIfIdle()
		}
	}
	return 0
}

// afterMove calls release once go-fuse has moved src from name in parent
// to newName in newParent, which it does right after Rename returns 0 and
// before the kernel hears of it. Keys follow places (place.go), which
// Rename has changed already; but until go-fuse's tree shows the move, a
// lookup of newName would not find src there and would make a second node
// of src's object. Either end is proof: a lookup that returned src just
// before the rename may add it under its old name once more when it
// completes (harmless: its place says where it is), and the bound keeps
// that from hanging the mount.
func (f *FS) afterMove(parent *gofs.Inode, name string, newParent *gofs.Inode, newName string, src *gofs.Inode, release func()) {
	defer release()
	deadline := time.Now().Add(time.Second)
	for parent.GetChild(name) == src && newParent.GetChild(newName) != src {
		if time.Now().After(deadline) {
			f.log.Warn("rename: the tree did not show the move within a second; going on", "name", newName)
			return
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// renameFailed forgets what the mount and the kernel hold about newName in
// dst after a failed move of a file, which may have left an object there:
// a copy that landed and a delete that failed (a policy that denies
// deletes) leave both names, and the kernel's negative entry for newName,
// from the rename's own lookup, hid the new one for stat_ttl, as did dst's
// listing. The kernel is told once the rename has returned: it holds dst's
// lock until then.
func (f *FS) renameFailed(dst *dirNode, newName string) {
	f.listings.ForgetBelow(dst.dirKey())
	go dst.NotifyEntry(newName)
}

// holdReplaced takes the freeze of the file a rename replaces, if it is
// one (holdForRemoval), and returns what lets it go.
func holdReplaced(ctx context.Context, target *gofs.Inode) (release func(), err error) {
	if target != nil {
		if t, ok := target.Operations().(*fileNode); ok {
			if err := t.holdForRemoval(ctx); err != nil {
				return nil, err
			}
			return t.freeze.Unlock, nil
		}
	}
	return func() {}, nil
}

// exists reports whether name is an object or a directory in the bucket.
// The listing of the directory's prefix also finds its marker.
func (d *dirNode) exists(ctx context.Context, name string) (bool, error) {
	path := upload.Child(d.path(), name)
	if key := d.fsys.fileKey(path); upload.ValidateKey(key) == nil {
		_, err := d.fsys.bucket.Head(ctx, key)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, bucket.ErrNotFound) {
			return false, err
		}
	}
	page, err := d.fsys.bucket.List(ctx, bucket.ListRequest{Prefix: d.fsys.dirKey(path), MaxKeys: 1})
	return err == nil && len(page.Objects)+len(page.Prefixes) > 0, err
}

// checkEmpty returns ENOTEMPTY if anything but its marker lies below the
// directory name, in the bucket or staged locally.
func (d *dirNode) checkEmpty(ctx context.Context, name string) syscall.Errno {
	key := d.fsys.dirKey(upload.Child(d.path(), name))
	// In the order a file moves from one to the next — staged, queued,
	// in the bucket — so that one moving on while this looks is seen in
	// the next place it is looked for.
	var below map[string]*gofs.Inode
	if ch := d.child(name); ch != nil {
		if dn, ok := ch.Operations().(*dirNode); ok {
			below = dn.children()
		}
	}
	for _, grandchild := range below {
		if fn, ok := grandchild.Operations().(*fileNode); ok && fn.isLocal() {
			return syscall.ENOTEMPTY
		}
	}
	if d.fsys.queue != nil {
		for _, k := range d.fsys.queue.Keys(key) {
			if k != key { // the directory's own marker does not count
				return syscall.ENOTEMPTY
			}
		}
	}
	page, err := d.fsys.bucket.List(ctx, bucket.ListRequest{Prefix: key, MaxKeys: 2})
	if err != nil {
		return d.fsys.fail("rmdir", key, err)
	}
	for _, o := range page.Objects {
		if o.Key == key {
			continue
		}
		if name, _, _ := strings.Cut(strings.TrimPrefix(o.Key, key), "/"); !isEntryName(name) {
			// Listings leave such keys out: say why an empty-looking
			// directory is not empty.
			d.fsys.log.Info("rmdir: the directory holds keys no path reaches", "key", key, "example", o.Key)
		}
		return syscall.ENOTEMPTY
	}
	if len(page.Prefixes) > 0 {
		return syscall.ENOTEMPTY
	}
	return 0
}

// moveObject copies and then deletes the source.
func (f *FS) moveObject(ctx context.Context, c bucket.CopyRequest) error {
	if err := f.bucket.Copy(ctx, c); err != nil {
		return err
	}
	return f.bucket.Delete(ctx, c.Src)
}

// renameDir moves every key below oldPath to newPath, replacing an empty
// directory there or not.
func (f *FS) renameDir(ctx context.Context, dir *dirNode, oldPath, newPath string, replacing bool) syscall.Errno {
	oldPrefix, newPrefix := f.dirKey(oldPath), f.dirKey(newPath)
	if errno := f.checkNewName("rename", newPrefix); errno != 0 {
		return errno
	}
	// Staged and queued content below goes to the bucket first, so one
	// listing sees everything that has to move. One walk serves this and
	// the sending below: creations and opens wait for the keys this rename
	// holds, so no other file below gets staged content meanwhile.
	files := filesBelow(dir)
	for _, n := range files {
		if err := n.upload(ctx, nil); err != nil {
			return f.fail("rename", oldPrefix, err)
		}
	}
	if f.queue != nil {
		if err := f.queue.WaitPrefix(ctx, oldPrefix); err != nil {
			return f.fail("rename", oldPrefix, err)
		}
	}
	var objs []bucket.ObjectInfo
	token := ""
	for {
		page, err := f.bucket.List(ctx, bucket.ListRequest{Prefix: oldPrefix, ContinuationToken: token, MaxKeys: 1000})
		if err != nil {
			return f.fail("rename", oldPrefix, err)
		}
		objs = append(objs, page.Objects...)
		if len(objs) > f.cfg.DirRenameLimit {
			f.log.Warn("directory rename over the object limit; mv falls back to copying", "key", oldPrefix, "limit", f.cfg.DirRenameLimit)
			return syscall.EXDEV
		}
		if token = page.NextToken; token == "" {
			break
		}
	}
	for _, o := range objs {
		if errno := f.checkNewName("rename", newPrefix+strings.TrimPrefix(o.Key, oldPrefix)); errno != 0 {
			return errno
		}
	}
	// Files staged from their end go up under their new keys, their
	// starts copied on the server; the rest are copied.
	sent := map[string]bool{}
	for _, n := range files {
		oldKey := n.key()
		moved, err := n.moveStagedBelow(ctx, newPrefix+strings.TrimPrefix(oldKey, oldPrefix))
		if err != nil {
			return f.fail("rename", oldKey, err)
		}
		sent[oldKey] = moved
	}
	copies := slices.DeleteFunc(slices.Clone(objs), func(o bucket.ObjectInfo) bool { return sent[o.Key] })
	var mu sync.Mutex
	made := make([]string, 0, len(copies))
	if err := parallel(ctx, copies, func(o bucket.ObjectInfo) error {
		dst := newPrefix + strings.TrimPrefix(o.Key, oldPrefix)
		if err := f.bucket.Copy(ctx, bucket.CopyRequest{Src: o.Key, Dst: dst, Size: o.Size}); err != nil {
			return err
		}
		mu.Lock()
		made = append(made, dst)
		mu.Unlock()
		return nil
	}); err != nil {
		errno := f.fail("rename", oldPrefix, err)
		keep := ""
		if replacing {
			keep = newPrefix // the marker of the directory that stays
		}
		f.undoCopies(ctx, made, keep)
		return errno
	}
	keys := make([]string, len(objs))
	for i, o := range objs {
		keys[i] = o.Key
	}
	if err := f.bucket.DeleteMany(ctx, keys); err != nil {
		return f.fail("rename", oldPrefix, err)
	}
	f.movedHeld(oldPrefix, newPrefix)
	f.cfg.Cache.RenameKeptBelow(oldPrefix, newPrefix)
	return 0
}

// undoCopies deletes the copies a directory rename made before it failed,
// all but keep: left, they would make the new name a directory holding part
// of the old one, and mv, finding a directory there after the failure,
// moves the old one into it (tree becomes moved/tree) and reports success.
// Their sources are all still in place. Best effort: copies it cannot
// delete are logged.
func (f *FS) undoCopies(ctx context.Context, made []string, keep string) {
	made = slices.DeleteFunc(made, func(k string) bool { return k == keep })
	if len(made) == 0 {
		return
	}
	if err := f.bucket.DeleteMany(ctx, made); err != nil {
		f.log.Error("rename failed, and copies it made could not all be deleted", "key", made[0], "copies", len(made), "err", err)
	}
}

// filesBelow returns the files the tree holds below dir.
func filesBelow(dir *dirNode) []*fileNode {
	var files []*fileNode
	for _, ch := range dir.children() {
		switch n := ch.Operations().(type) {
		case *fileNode:
			files = append(files, n)
		case *dirNode:
			files = append(files, filesBelow(n)...)
		}
	}
	return files
}

// parallel runs fn for every object with a few requests in flight and
// returns the first error, starting no more after it (those in flight
// finish before it returns). Copies on the server move no byte through the
// mount: 16 at a time cost OSS little and a directory rename much less
// time than a round trip each.
func parallel(ctx context.Context, objs []bucket.ObjectInfo, fn func(bucket.ObjectInfo) error) error {
	const inFlight = 16
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	sem := make(chan struct{}, inFlight)
	for _, k := range objs {
		sem <- struct{}{}
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			<-sem
			break // the rest would be undone
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(k); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return firstErr
}
