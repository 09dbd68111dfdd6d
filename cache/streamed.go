package cache

import (
	"fmt"
	"syscall"

	"github.com/dustin/go-humanize"
	"golang.org/x/sys/unix"
)

// Files larger than the cache. A file written in order is uploaded in
// parts while it is written (upload.Stream), and its staged bytes stay on
// the cache disk for reads and for the fallback of a whole upload. A file
// larger than cache_size, or than the free disk (a backup tar of 500 GB
// through a 50 GB disk), failed with ENOSPC. When a writer is short of
// room, the bytes of parts the bucket already holds leave the disk
// instead (a hole is punched), and the writer waits for parts in flight
// to become such bytes. Those bytes cannot be read or written again: the
// file can then only grow in order until its upload completes, and a
// program that reads or changes them gets EIO (ErrDropped) — as it would
// from mountpoint-s3, which keeps nothing of a file it writes.

// ErrDropped is the error of a read or write of staged bytes that left
// the cache disk.
var ErrDropped = fmt.Errorf("that part of the file left the cache disk once it was uploaded as a part: %w", syscall.EIO)

// sending is where a streamed upload of a staging file stands.
type sending struct {
	key    string // the object, for the log
	handed int64  // bytes below handed belong to parts
	sent   int64  // bytes below sent are in the bucket, as parts
}

// Sending tells the cache where a streamed upload of the file stands:
// bytes below handed belong to parts, those below sent are in the bucket
// as parts of the upload (each a contiguous prefix) under key. The stream
// must call it only while its upload is alive, and StreamEnded once it is
// not.
func (s *Staging) Sending(key string, handed, sent int64) {
	s.dir.mu.Lock()
	defer s.dir.mu.Unlock()
	if s.dir.streaming == nil {
		s.dir.streaming = make(map[*Staging]*sending)
	}
	st := s.dir.streaming[s]
	if st == nil {
		st = &sending{key: key}
		s.dir.streaming[s] = st
	}
	st.handed, st.sent = max(st.handed, handed), max(st.sent, sent)
	s.dir.wakeLocked()
}

// StreamEnded says the streamed upload completed or was given up: nothing
// more of the file is sent, or may leave the disk.
func (s *Staging) StreamEnded() {
	s.dir.mu.Lock()
	defer s.dir.mu.Unlock()
	if _, ok := s.dir.streaming[s]; ok {
		delete(s.dir.streaming, s)
		s.dir.wakeLocked()
	}
}

// Dropped is the offset below which the staged bytes left the disk.
func (s *Staging) Dropped() int64 { return s.dropped.Load() }

// dropSent frees the disk of bytes that streamed uploads have sent,
// waiting while parts are in flight if none are sent yet; it reports
// whether anything was freed.
func (d *Dir) dropSent() bool {
	d.mu.Lock()
	for {
		var sent *Staging
		inFlight := false
		for s, st := range d.streaming {
			if st.sent > s.dropped.Load() {
				sent = s
				break
			}
			inFlight = inFlight || st.handed > st.sent
		}
		if sent != nil {
			key, to := d.streaming[sent].key, d.streaming[sent].sent
			d.mu.Unlock()
			if sent.dropTo(key, to) {
				return true
			}
			d.mu.Lock()
			delete(d.streaming, sent) // it cannot drop: leave it be
			continue
		}
		if !inFlight {
			d.mu.Unlock()
			return false
		}
		d.cond.Wait()
	}
}

// dropTo punches the bytes from the last drop up to off out of the file
// and releases their space. It holds the file exclusively, so that no
// read or write is between its check of Dropped and its pread or pwrite.
func (s *Staging) dropTo(key string, off int64) bool {
	s.use.Lock()
	if s.f == nil {
		s.use.Unlock()
		return false
	}
	from := s.dropped.Load()
	var err error
	var freed int64 // holes were never in used
	if off > from {
		err = unix.Fallocate(int(s.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, from, off-from)
		if err == nil {
			s.mu.Lock()
			freed = off - from - s.holes.in(from, off)
			s.holes = s.holes.cut(from, off)
			s.changedLocked(from, off)
			s.dropped.Store(off)
			s.mu.Unlock()
		}
	}
	s.use.Unlock()
	if err != nil {
		if s.dir.log != nil {
			s.dir.log.Warn("the cache is full, and the uploaded parts of a file could not leave it", "key", key, "err", err)
		}
		return false
	}
	if off <= from {
		return true // another writer dropped them
	}
	s.dir.release(freed)
	if from == 0 && s.dir.log != nil {
		s.dir.log.Info("the cache is full: uploaded parts of a file being written leave it; the file can only grow in order until it is closed",
			"key", key, "dropped", humanize.IBytes(uint64(off)))
	}
	return true
}
