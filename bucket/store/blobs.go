package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/ossmount/ossmount/internal/fsutil"
)

// blobStore keeps object bodies ("blobs") and, on disk, the records that
// name an object's blobs. An object is one blob, or the part blobs of a
// completed multipart upload in order, so completing costs no copy.
type blobStore interface {
	createBucket(bucket string) error
	create(bucket string) (blobWriter, error)
	open(bucket, blob string) (readerAtCloser, error)
	// remove drops a blob that is no longer referenced.
	remove(bucket, blob string)
	// saveRecord durably records obj as made of blobs.
	saveRecord(bucket string, obj Object, blobs []blobRef) error
	// deleteRecord removes the record of key.
	deleteRecord(bucket, key string) error
}

// blobRef is one blob of an object.
type blobRef struct {
	ID   string
	Size int64
}

type blobWriter interface {
	io.Writer
	// commit makes the blob durable and returns its id.
	commit() (blob string, err error)
	abort()
}

type readerAtCloser interface {
	io.ReaderAt
	io.Closer
}

// --- memory ---

type memBlobs struct {
	mu    sync.Mutex
	data  map[string][]byte // GUARDED_BY(mu)
	count int               // GUARDED_BY(mu)
}

func newMemBlobs() *memBlobs { return &memBlobs{data: map[string][]byte{}} }

func (m *memBlobs) createBucket(string) error { return nil }

func (m *memBlobs) create(string) (blobWriter, error) { return &memWriter{m: m}, nil }

func (m *memBlobs) open(_, blob string) (readerAtCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return nopCloser{bytes.NewReader(m.data[blob])}, nil
}

func (m *memBlobs) remove(_, blob string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.data, blob)
}

func (m *memBlobs) saveRecord(string, Object, []blobRef) error { return nil }
func (m *memBlobs) deleteRecord(string, string) error          { return nil }

type nopCloser struct{ io.ReaderAt }

func (nopCloser) Close() error { return nil }

type memWriter struct {
	m   *memBlobs
	buf bytes.Buffer
}

func (w *memWriter) Write(p []byte) (int, error) { return w.buf.Write(p) }
func (w *memWriter) abort()                      {}
func (w *memWriter) commit() (string, error) {
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	w.m.count++
	id := fmt.Sprint(w.m.count)
	w.m.data[id] = w.buf.Bytes()
	return id, nil
}

// --- directory ---
//
// Layout: ROOT/BUCKET/objects/SHA256(key).json is the record of one object
// (its Object fields and the name of its body); ROOT/BUCKET/data/ID holds
// bodies; ROOT/BUCKET/tmp/ holds bodies being written. A replace writes a new
// body, then renames a new record over the old one: the rename is the atomic
// switch, and bodies no record names are removed at the next start.

type dirBlobs struct{ root string }

func newDirBlobs(root string) (*dirBlobs, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	return &dirBlobs{root: root}, nil
}

type record struct {
	Object
	Blobs []blobRef
}

func (d *dirBlobs) createBucket(bucket string) error {
	for _, sub := range []string{"objects", "data", "tmp"} {
		if err := os.MkdirAll(filepath.Join(d.root, bucket, sub), 0o700); err != nil {
			return err
		}
	}
	return nil
}

// load reads every bucket's records and removes unreferenced bodies and
// leftovers of interrupted writes.
func (d *dirBlobs) load() (map[string][]*entry, error) {
	dirs, err := os.ReadDir(d.root)
	if err != nil {
		return nil, err
	}
	out := map[string][]*entry{}
	for _, bd := range dirs {
		if !bd.IsDir() {
			continue
		}
		bucket := bd.Name()
		if err := d.createBucket(bucket); err != nil {
			return nil, err
		}
		os.RemoveAll(filepath.Join(d.root, bucket, "tmp"))
		os.MkdirAll(filepath.Join(d.root, bucket, "tmp"), 0o700)
		recs, err := os.ReadDir(filepath.Join(d.root, bucket, "objects"))
		if err != nil {
			return nil, err
		}
		used := map[string]bool{}
		out[bucket] = nil
		for _, r := range recs {
			p := filepath.Join(d.root, bucket, "objects", r.Name())
			if !strings.HasSuffix(r.Name(), ".json") {
				os.Remove(p)
				continue
			}
			raw, err := os.ReadFile(p)
			if err != nil {
				return nil, err
			}
			var rec record
			if err := json.Unmarshal(raw, &rec); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			for _, b := range rec.Blobs {
				used[b.ID] = true
			}
			out[bucket] = append(out[bucket], &entry{Object: rec.Object, blobs: rec.Blobs})
		}
		bodies, err := os.ReadDir(filepath.Join(d.root, bucket, "data"))
		if err != nil {
			return nil, err
		}
		for _, b := range bodies {
			if !used[b.Name()] {
				os.Remove(filepath.Join(d.root, bucket, "data", b.Name()))
			}
		}
	}
	return out, nil
}

func (d *dirBlobs) recordPath(bucket, key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(d.root, bucket, "objects", hex.EncodeToString(sum[:])+".json")
}

func (d *dirBlobs) create(bucket string) (blobWriter, error) {
	f, err := os.CreateTemp(filepath.Join(d.root, bucket, "tmp"), "body-")
	if err != nil {
		return nil, err
	}
	return &dirWriter{d: d, bucket: bucket, f: f}, nil
}

func (d *dirBlobs) open(bucket, blob string) (readerAtCloser, error) {
	return os.Open(filepath.Join(d.root, bucket, "data", blob))
}

func (d *dirBlobs) remove(bucket, blob string) {
	os.Remove(filepath.Join(d.root, bucket, "data", blob))
}

func (d *dirBlobs) saveRecord(bucket string, obj Object, blobs []blobRef) error {
	raw, err := json.Marshal(record{Object: obj, Blobs: blobs})
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(d.recordPath(bucket, obj.Key), raw)
}

func (d *dirBlobs) deleteRecord(bucket, key string) error {
	if err := os.Remove(d.recordPath(bucket, key)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

type dirWriter struct {
	d      *dirBlobs
	bucket string
	f      *os.File
}

func (w *dirWriter) Write(p []byte) (int, error) { return w.f.Write(p) }

func (w *dirWriter) abort() {
	w.f.Close()
	os.Remove(w.f.Name())
}

func (w *dirWriter) commit() (string, error) {
	blob := newID()
	dataPath := filepath.Join(w.d.root, w.bucket, "data", blob)
	err := w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(w.f.Name(), dataPath)
	}
	if err != nil {
		os.Remove(w.f.Name())
		return "", err
	}
	return blob, nil
}
