package cache

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// Files staged without their start. An append to a large object this
// mount holds no copy of read the whole object into the cache first: a
// line added to a 10 GB log moved 10 GB in before its one part went out.
// A file may instead be staged from its last part only (the caller does
// that in sync mode): the bytes below an offset are not on the cache disk
// but are the object version they came from, whose CRC-64 is known. An
// upload has the server copy them (upload/copying.go). A read or write
// there, or a truncate into them, gets ErrAbsent, and the caller fills
// them in from the object first (AbsentWriter, Filled).

// ErrAbsent is the error of a read, write or truncate of the bytes of a
// file that are not staged yet (the caller fetches them first).
var ErrAbsent = fmt.Errorf("that part of the file is not staged yet, only in the object it came from: %w", syscall.EIO)

// absentStart is where the bytes [0, end) of a staging file are: the
// object key in version etag, whose CRC-64 over them is crc.
type absentStart struct {
	key, etag string
	end       int64
	crc       uint64
}

// SetAbsent says the bytes below end are not staged: they are those of
// the object key in version etag at the same offsets, with CRC-64 crc.
// The file's size must already be at least end (a hole there).
func (s *Staging) SetAbsent(key, etag string, end int64, crc uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.absent = &absentStart{key: key, etag: etag, end: end, crc: crc}
	s.absentEnd.Store(end)
}

// Absent returns where the bytes below end are, if some are not staged
// (end 0: all are).
func (s *Staging) Absent() (key, etag string, end int64, crc uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.absent; a != nil {
		return a.key, a.etag, a.end, a.crc
	}
	return "", "", 0, 0
}

// AbsentWriter writes fetched bytes below the absent end; they count in
// the cache's space as any staged bytes, but are no change of the file.
func (s *Staging) AbsentWriter() io.WriterAt { return absentWriter{s} }

type absentWriter struct{ s *Staging }

func (w absentWriter) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > w.s.absentEnd.Load() {
		return 0, fmt.Errorf("filling %d bytes at %d past the absent start: %w", len(p), off, os.ErrInvalid)
	}
	return w.s.writeAccounted(p, off)
}

// Filled says every absent byte was written (AbsentWriter).
func (s *Staging) Filled() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clearAbsentLocked()
}

// clearAbsentLocked forgets the absent start. LOCKS_REQUIRED(s.mu)
func (s *Staging) clearAbsentLocked() {
	s.absent = nil
	s.absentEnd.Store(0)
}
