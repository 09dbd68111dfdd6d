package fs

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/ossmount/ossmount/cache"
)

// The kernel's page cache across opens. Without FOPEN_KEEP_CACHE the
// kernel drops a file's cached pages at every open, so each `cat` of an
// object, or each of git's reads of .git/config, fetched it again. A
// read-only open keeps them when every read of the object since they were
// last dropped was of one version, and that version is the one the mount
// last saw in the bucket (a HEAD, a listing, its own upload) less than
// stat_ttl ago, under the same key: the freshness of the file's
// attributes. Anything this mount does to the content stages the file
// first, which forgets the version; another client's change shows once a
// lookup after stat_ttl, or a listing, finds a new ETag. ETags are
// compared, never trusted to be current: two versions with one ETag have
// the same bytes.

// sameVersion reports whether two ETags name one object version. An ETag
// from a response header is quoted; one from a response body (a completed
// multipart upload) may not be.
func sameVersion(a, b string) bool {
	return a != "" && strings.Trim(a, `"`) == strings.Trim(b, `"`)
}

// mixedPages is the pages' version when reads of two versions filled
// them: they are dropped at the next open. No ETag looks like this.
const mixedPages = "\x00mixed"

// maxPageRanges bounds the ranges followed of a version's pages: reads
// scattered wider than that leave them to be dropped at the next open.
const maxPageRanges = 64

// pageRanges are the byte ranges reads of one version put in the page
// cache, in order, apart, none empty.
type pageRanges [][2]int64

// add takes in [off, end); false when there would be too many ranges.
func (r *pageRanges) add(off, end int64) bool {
	if off >= end {
		return true
	}
	out := make(pageRanges, 0, len(*r)+1)
	for _, x := range *r {
		switch {
		case x[1] < off || x[0] > end:
			out = append(out, x)
		default: // overlapping or touching: joined
			off, end = min(off, x[0]), max(end, x[1])
		}
	}
	out = append(out, [2]int64{off, end})
	slices.SortFunc(out, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	*r = out
	return len(out) <= maxPageRanges
}

// covers reports whether the ranges hold all of [0, size).
func (r pageRanges) covers(size int64) bool {
	return size > 0 && len(r) == 1 && r[0][0] == 0 && r[0][1] >= size
}

// keepPages reports whether a new read-only handle keeps the kernel's
// cached pages of the file, and the version they are of, to which the
// handle is pinned (readPin). Only pages of the whole file are kept: a
// part left unread would be read from the object, which another client
// may have replaced within stat_ttl, failing the read with ESTALE where
// a new open read the new version. If not kept, the kernel drops them,
// and the reads through the new handle start the record afresh.
func (n *fileNode) keepPages() (readPin, bool) {
	key := n.key()
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.pages
	keep := n.staging == nil && !n.unlinked && sameVersion(p.etag, n.etag) &&
		p.key == key && p.rewrites == n.rewrites && n.pagesRead.covers(n.size) &&
		n.fsys.withinTTL(n.etagSeen)
	if !keep {
		n.pages, n.pagesRead = readPin{}, nil
	}
	return p, keep
}

// notePages records that a read of the object, of the version pin, put
// [off, end) in the kernel's pages. (Reads of a staged file are of the
// staging file: the version was forgotten when it was staged.)
func (n *fileNode) notePages(pin readPin, off, end int64) {
	if pin.etag == "" {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.staging != nil:
		return
	case n.pages == readPin{}:
		n.pages = pin
	case n.pages != pin:
		n.pages, n.pagesRead = readPin{etag: mixedPages}, nil
		return
	}
	if !n.pagesRead.add(off, end) {
		n.pages, n.pagesRead = readPin{etag: mixedPages}, nil
	}
}

// uploadedVersionLocked takes the version of the object an upload made of
// st, the file's staging file, when it is let go unchanged since.
// LOCKS_REQUIRED(n.mu)
func (n *fileNode) uploadedVersionLocked(st *cache.Staging, key string) {
	if srcKey, etag, ok := st.Unchanged(0, n.size); ok && srcKey == key {
		n.etag, n.etagSeen = etag, n.confirmed // when it landed
	}
}

// listedAs takes a listing's entry for the file's object: the bucket
// still has the version the mount last saw (or, if it knew none, has this
// one), or has another one, whose pages a new open does not keep.
func (n *fileNode) listedAs(size int64, etag string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.staging != nil:
	case etag != "" && (sameVersion(etag, n.etag) || n.etag == "") && size == n.size:
		n.etag, n.etagSeen = etag, n.fsys.now()
	default:
		n.etagSeen = time.Time{}
	}
}

// versionGone takes a read's finding that the object is not the version
// etag any more: if the mount took it for the current one, its pages are
// not kept from now on.
func (n *fileNode) versionGone(etag string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if sameVersion(etag, n.etag) {
		n.etagSeen = time.Time{}
	}
}
