package fs

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// Keys come from each node's own record of its place — its parent
// directory and its name there — not from go-fuse's tree (Inode.Path).
// go-fuse changes its tree after an operation returns: it moves a node
// once Rename has returned, and adds a looked-up node once Lookup has
// returned. A lookup that returned a node just before a rename of it thus
// adds it back under its old name after the move, and the node then has
// two names there, the newest first — its writes would be uploaded under
// the name it no longer has (TestLookupReturningAcrossARename). A place
// changes inside the operation, under FS.keys held exclusively (Rename)
// or shared (Unlink, Rmdir: the node then has none), and is one.

// place is where a node is: in parent (nil for the root) under name.
type place struct {
	parent *dirNode
	name   string
}

// placed is embedded in every node.
type placed struct {
	at atomic.Pointer[place] // nil: removed from the tree
}

func (p *placed) placeAt(parent *dirNode, name string) {
	p.at.Store(&place{parent: parent, name: name})
}

// unplace marks the node removed (unlinked, rmdir'd, replaced by a rename).
func (p *placed) unplace() { p.at.Store(nil) }

func (p *placed) isAt(parent *dirNode, name string) bool {
	at := p.at.Load()
	return at != nil && at.parent == parent && at.name == name
}

// path is the node's path below the mountpoint: "" for the root, and for a
// node removed from the tree or below a removed directory (which has no
// key; see fileNode.unlinked).
func (p *placed) path() string {
	var names []string
	at := p.at.Load()
	for at != nil && at.parent != nil {
		names = append(names, at.name)
		at = at.parent.at.Load()
	}
	if at == nil {
		return ""
	}
	slices.Reverse(names)
	return strings.Join(names, "/")
}

// placedNode is a node type of this file system.
type placedNode interface {
	gofs.InodeEmbedder
	placeAt(parent *dirNode, name string)
	isAt(parent *dirNode, name string) bool
	unplace()
}

// newChild makes the inode of node, placed in d under name.
func (d *dirNode) newChild(ctx context.Context, name string, node placedNode, mode uint32) *gofs.Inode {
	node.placeAt(d, name)
	return d.NewInode(ctx, node, gofs.StableAttr{Mode: mode})
}

// child is d's node named name, if go-fuse's tree has it there and it is
// there: the tree may still show a node that has moved or gone.
func (d *dirNode) child(name string) *gofs.Inode {
	if ch := d.GetChild(name); ch != nil && d.holds(name, ch) {
		return ch
	}
	return nil
}

// children are d's nodes that are in it (child), by name.
func (d *dirNode) children() map[string]*gofs.Inode {
	out := d.Children()
	for name, ch := range out {
		if !d.holds(name, ch) {
			delete(out, name)
		}
	}
	return out
}

// holds reports whether ch, under name in go-fuse's tree, is there.
func (d *dirNode) holds(name string, ch *gofs.Inode) bool {
	n, ok := ch.Operations().(placedNode)
	return ok && n.isAt(d, name)
}
