package crc64

import (
	"io"
	"sync"
)

// buffers are ReaderAt's: a new one per call was a megabyte per part
// checked.
var buffers = sync.Pool{New: func() any { return new([256 << 10]byte) }}

// ReaderAt is the CRC of size bytes of r from off. A read error before
// size bytes are read is returned (io.EOF if r ends first).
func ReaderAt(r io.ReaderAt, off, size int64) (uint64, error) {
	buf := buffers.Get().(*[256 << 10]byte)
	defer buffers.Put(buf)
	var crc uint64
	for size > 0 {
		n, err := r.ReadAt(buf[:min(int64(len(buf)), size)], off)
		crc = Update(crc, buf[:n])
		off, size = off+int64(n), size-int64(n)
		if err != nil && size > 0 {
			return 0, err
		}
	}
	return crc, nil
}
