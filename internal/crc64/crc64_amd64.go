package crc64

import "golang.org/x/sys/cpu"

var hasCLMUL = cpu.X86.HasPCLMULQDQ && cpu.X86.HasSSE41

// fold folds p (a multiple of 64 bytes, at least 64) into 16 bytes lo, hi
// (little-endian) whose CRC from 0 is p's CRC from the register value s.
//
//go:noescape
func fold(s uint64, p []byte, keys *[4]uint64) (lo, hi uint64)
