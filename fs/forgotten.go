package fs

import gofs "github.com/hanwen/go-fuse/v2/fs"

// Nodes the kernel forgets. go-fuse takes a node out of its tree when the
// kernel drops it (memory pressure, drop_caches), and the next lookup of
// the name makes a new one from the bucket. A file the bucket does not
// have yet — written or queued and not uploaded, its upload at release
// failed and waiting to be tried again, a chmod held for a moment — was
// then gone from lookups and listings until its upload landed, and a
// program that wrote the name meanwhile made a second node, which the
// first one's upload then overwrote (a retry at release put back the old
// content; a held chmod the old mode). Such a node is put back in the tree
// without a kernel reference, so that the next lookup finds it, with all
// it holds; it leaves once the bucket has caught up (settled). (A lookup
// in the moment between go-fuse's removal and OnForget still asks the
// bucket.)

// OnForget puts the node back in the tree if it holds what the bucket does
// not have yet.
func (n *fileNode) OnForget() {
	n.mu.Lock()
	pending := n.pendingLocked()
	n.mu.Unlock()
	if !pending {
		return
	}
	if !n.putBackInTree(n.EmbeddedInode()) {
		n.fsys.log.Warn("the kernel forgot a file not uploaded yet, and the name is taken again; its upload goes on", "key", n.key())
		return
	}
	n.mu.Lock()
	n.putBack = true
	n.mu.Unlock()
	n.fsys.log.Debug("the kernel forgot a file not uploaded yet; kept in the tree", "key", n.key())
}

// pendingLocked reports whether the node holds content or metadata the
// bucket may not have: staged or queued content (localLocked), a metadata
// change held or on its way. LOCKS_REQUIRED(n.mu)
func (n *fileNode) pendingLocked() bool {
	return n.localLocked() || !n.unlinked && n.metaAheadLocked()
}

// settled takes a node OnForget put back out of the tree once it holds
// nothing the bucket lacks, unless the kernel has looked it up again.
func (n *fileNode) settled() {
	n.mu.Lock()
	out := n.putBack && !n.pendingLocked()
	if out {
		n.putBack = false
	}
	n.mu.Unlock()
	if out {
		// Removes it only if the kernel holds no reference to it.
		n.EmbeddedInode().ForgetPersistent()
	}
}

// OnForget puts a directory back in the tree if it holds what the bucket
// may not show: a marker queued or a metadata change held (write-back
// mkdir), or entries this mount removed (emptiedHere: a directory without
// a marker stops existing in the bucket with its last object). Its new
// node was made from the bucket, which may not show it yet.
func (d *dirNode) OnForget() {
	d.mu.Lock()
	pending := !d.removed && (d.metaPending || d.emptiedHere)
	d.mu.Unlock()
	if pending || d.fsys.queue != nil && d.fsys.queue.HasPrefix(d.dirKey()) {
		d.putBackInTree(d.EmbeddedInode())
	}
}

// putBackInTree adds in, the node go-fuse took out of the tree, to its
// parent again under its name; false if it has no place, or another node
// took the name meanwhile.
func (p *placed) putBackInTree(in *gofs.Inode) bool {
	at := p.at.Load()
	return at != nil && at.parent != nil && at.parent.AddChild(at.name, in, false)
}
