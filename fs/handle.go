package fs

import gofs "github.com/hanwen/go-fuse/v2/fs"

// fileHandle is one open file description. The node does the work; the
// handle remembers how it was opened.
type fileHandle struct {
	node   *fileNode
	append bool // O_APPEND: every write goes to the end
}

var _ gofs.FileHandle = (*fileHandle)(nil)
