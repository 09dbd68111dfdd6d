//go:build !amd64

package crc64

const hasCLMUL = false

func fold(s uint64, p []byte, keys *[4]uint64) (lo, hi uint64) {
	panic("crc64: no carry-less multiply")
}
