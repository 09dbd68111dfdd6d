package cache

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ossmount/ossmount/internal/fsutil"
)

// A multipart upload holds its parts on the server, billed and invisible
// in listings, until it is completed or aborted. A mount that is killed,
// crashes or loses power in the middle of one (a big file streamed while
// cp writes it, or a whole upload through the SDK's Uploader) leaves it
// there; OSS drops it only by a lifecycle rule. So every mount keeps a
// ledger of the uploads it started and has not ended, and a later mount
// of the same bucket aborts those of mounts that are gone.
//
// A ledger is a file in DIR/multipart/NAMESPACE/, flock'd by its mount for
// the mount's life: a ledger that can be locked belongs to no live mount.
// It is a log of JSON lines, one per start and end, so a write never
// rewrites what a crash could cut short.

// Upload is a multipart upload: the object it makes and its ID.
type Upload struct {
	Key string `json:"key,omitempty"`
	ID  string `json:"id"`
}

// ledgerLine is a line of a ledger: a start (Key set) or an end.
type ledgerLine struct {
	Upload
	Ended bool `json:"ended,omitempty"`
}

// ledgerCompactAt is the size past which a ledger with no open upload is
// emptied, so that a mount that uploads for months keeps a small file.
const ledgerCompactAt = 64 << 10

// Multiparts is this mount's ledger. Its methods are safe for concurrent
// use; a failure to write is logged, never returned: the upload goes on,
// only its cleanup after a crash is lost.
type Multiparts struct {
	dir string
	log *slog.Logger

	mu   sync.Mutex
	f    *os.File          // GUARDED_BY(mu); nil until the first start
	path string            // GUARDED_BY(mu); f's name once in view
	open map[string]string // GUARDED_BY(mu); ID → key of uploads not ended
	size int64             // GUARDED_BY(mu); bytes written to f
	// warned says a failure to record was logged.
	warned bool // GUARDED_BY(mu)
}

// OpenMultiparts returns the ledger of a mount under cacheDir; namespace
// names the bucket (endpoint and bucket: any later mount of that bucket
// cleans up). It creates nothing but the directory until an upload starts.
func OpenMultiparts(cacheDir, namespace string, log *slog.Logger) (*Multiparts, error) {
	dir := filepath.Join(cacheDir, "multipart", namespace)
	if err := ensurePrivateDir(dir); err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	return &Multiparts{dir: dir, log: log, open: map[string]string{}}, nil
}

// Started records an upload before any part of it is sent.
func (m *Multiparts) Started(key, id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.open[id] = key
	if err := m.appendLocked(ledgerLine{Upload: Upload{Key: key, ID: id}}, true); err != nil && !m.warned {
		m.warned = true // once: it would fail the same way for every upload
		m.log.Warn("cannot record a multipart upload in the cache directory; if ossmount dies before it ends, its parts stay on the server", "key", key, "err", err)
	}
}

// Ended records that an upload was completed or aborted.
func (m *Multiparts) Ended(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.open[id]; !ok {
		return
	}
	delete(m.open, id)
	if len(m.open) == 0 && m.size >= ledgerCompactAt {
		// Nothing open: the whole log can go. The lock is on the file, so
		// it stays held.
		if err := m.f.Truncate(0); err == nil {
			if _, err := m.f.Seek(0, io.SeekStart); err == nil {
				m.size = 0
				return
			}
		}
	}
	// An end that does not reach the disk only makes a later mount abort
	// an upload that is gone already.
	m.appendLocked(ledgerLine{Upload: Upload{ID: id}, Ended: true}, false)
}

// appendLocked writes one line, creating and locking the ledger first. A
// start is made durable: a crash right after its parts are sent must not
// lose it.
func (m *Multiparts) appendLocked(l ledgerLine, durable bool) error {
	if m.f == nil {
		f, err := m.create()
		if err != nil {
			return err
		}
		m.f = f
	}
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	n, err := m.f.Write(append(b, '\n'))
	m.size += int64(n)
	if err == nil && durable {
		err = syscall.Fdatasync(int(m.f.Fd()))
	}
	return err
}

// create makes this mount's ledger, locked before it has a name, so that
// no other mount takes a fresh ledger for a dead one's, and a mount killed
// while making it leaves nothing behind: an unnamed (O_TMPFILE) file,
// linked into view once locked; where the file system has no unnamed
// files, one under a hidden name, renamed (Orphans removes a hidden one
// left unlocked for a minute). Then its directory entry is made durable.
func (m *Multiparts) create() (*os.File, error) {
	path := filepath.Join(m.dir, fmt.Sprintf("%d-%s", os.Getpid(), newID()))
	f, err := os.OpenFile(m.dir, os.O_RDWR|oTmpfile, 0o600)
	unnamed := err == nil
	if !unnamed {
		if f, err = os.CreateTemp(m.dir, fmt.Sprintf(".%d-*", os.Getpid())); err != nil {
			return nil, err
		}
	}
	ledgerMade(m.dir)
	drop := func(err error) (*os.File, error) {
		if !unnamed {
			os.Remove(f.Name())
		}
		f.Close()
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return drop(err)
	}
	if unnamed {
		err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(f.Fd())), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
	} else {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return drop(err)
	}
	if err := fsutil.SyncDir(m.dir); err != nil {
		m.log.Warn("cannot sync the multipart ledger's directory", "dir", m.dir, "err", err)
	}
	m.path = path
	return f, nil
}

// ledgerMade is called once a ledger's file exists, before it is locked
// (a test looks at the directory then).
var ledgerMade = func(dir string) {}

// Close ends the ledger at unmount: removed when every upload ended, kept
// (for the next mount to abort what is left) otherwise.
func (m *Multiparts) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.f == nil {
		return nil
	}
	f := m.f
	m.f = nil
	if len(m.open) > 0 {
		m.log.Warn("multipart uploads not ended at unmount stay in the ledger; the next mount of the bucket aborts them", "uploads", len(m.open))
		return f.Close()
	}
	err := os.Remove(m.path)
	f.Close()
	return err
}

// Orphans are the uploads of ledgers whose mounts are gone. Their ledgers
// stay locked until Settle.
type Orphans struct {
	Uploads []Upload
	ledgers []*os.File
}

// Orphans takes the ledgers of mounts that are gone (those it can lock)
// and returns the uploads they started and did not end.
func (m *Multiparts) Orphans() (*Orphans, error) {
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return nil, err
	}
	o := &Orphans{}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		f, err := os.Open(filepath.Join(m.dir, e.Name()))
		if err != nil {
			continue // removed by another mount meanwhile
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close() // its mount is alive (or another mount is taking it)
			continue
		}
		if strings.HasPrefix(e.Name(), ".") {
			// A ledger being made holds nothing yet; one a minute old
			// and unlocked was left by a mount that died making it.
			if fi, err := f.Stat(); err == nil && time.Since(fi.ModTime()) > time.Minute {
				os.Remove(f.Name())
			}
			f.Close()
			continue
		}
		ups, err := readLedger(f)
		if err != nil {
			m.log.Warn("cannot read a multipart ledger", "file", f.Name(), "err", err)
		}
		o.Uploads = append(o.Uploads, ups...)
		o.ledgers = append(o.ledgers, f)
	}
	return o, nil
}

// readLedger returns the uploads a ledger started and did not end. A line
// cut short by a crash is skipped.
func readLedger(f *os.File) ([]Upload, error) {
	open := map[string]string{}
	var order []string
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		var l ledgerLine
		if json.Unmarshal(s.Bytes(), &l) != nil || l.ID == "" {
			continue
		}
		if l.Ended {
			delete(open, l.ID)
			continue
		}
		if _, ok := open[l.ID]; !ok {
			order = append(order, l.ID)
		}
		open[l.ID] = l.Key
	}
	var ups []Upload
	for _, id := range order {
		if key, ok := open[id]; ok {
			ups = append(ups, Upload{Key: key, ID: id})
		}
	}
	return ups, s.Err()
}

// Settle removes the orphans' ledgers once their uploads are aborted; the
// uploads in left (aborts that failed) move to this mount's ledger, so
// that a later mount tries again.
func (m *Multiparts) Settle(o *Orphans, left []Upload) {
	for _, u := range left {
		m.Started(u.Key, u.ID)
	}
	for _, f := range o.ledgers {
		if err := os.Remove(f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
			m.log.Warn("cannot remove a multipart ledger", "file", f.Name(), "err", err)
		}
		f.Close()
	}
	o.ledgers = nil
}
