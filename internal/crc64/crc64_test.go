package crc64

import (
	"bytes"
	"hash/crc64"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
)

var ecma = crc64.MakeTable(crc64.ECMA)

// TestMatchesHashCRC64 checks every length around the folding thresholds,
// unaligned starts and running CRCs against the standard library.
func TestMatchesHashCRC64(t *testing.T) {
	if !hasCLMUL {
		t.Log("no PCLMULQDQ: checking the table path only")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 5000)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	for n := 0; n <= 1100; n++ {
		for _, start := range []int{0, 1, 7} {
			p := buf[start : start+n]
			for _, init := range []uint64{0, ^uint64(0), rng.Uint64()} {
				if got, want := Update(init, p), crc64.Update(init, ecma, p); got != want {
					t.Fatalf("len %d start %d init %#x: got %#x, want %#x", n, start, init, got, want)
				}
			}
		}
	}
	big := make([]byte, 1<<20+13)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	init := rng.Uint64()
	if got, want := Update(init, big[3:]), crc64.Update(init, ecma, big[3:]); got != want {
		t.Fatalf("1 MiB: got %#x, want %#x", got, want)
	}
	// In pieces, as a stream is hashed.
	var got uint64
	for p := buf; len(p) > 0; {
		k := min(len(p), 1+rng.IntN(700))
		got, p = Update(got, p[:k]), p[k:]
	}
	if want := crc64.Checksum(buf, ecma); got != want {
		t.Fatalf("in pieces: got %#x, want %#x", got, want)
	}
}

// A known value: CRC-64/XZ of "123456789".
func TestCheckValue(t *testing.T) {
	p := make([]byte, 0, 900)
	for len(p) < 900 {
		p = append(p, "123456789"...)
	}
	if got := Checksum([]byte("123456789")); got != 0x995dc9bbdf1939fa {
		t.Fatalf("check value %#x", got)
	}
	if got, want := Checksum(p), crc64.Checksum(p, ecma); got != want {
		t.Fatalf("900 bytes: got %#x, want %#x", got, want)
	}
}

func BenchmarkUpdate(b *testing.B) {
	p := make([]byte, 1<<20)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		Update(0, p)
	}
}

func BenchmarkHashCRC64(b *testing.B) {
	p := make([]byte, 1<<20)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		crc64.Update(0, ecma, p)
	}
}

func TestReaderAt(t *testing.T) {
	data := make([]byte, 700<<10+13) // more than one buffer
	for i := range data {
		data[i] = byte(i*31 + i>>11)
	}
	r := bytes.NewReader(data)
	for _, c := range []struct{ off, size int64 }{{0, int64(len(data))}, {5, 300 << 10}, {int64(len(data)) - 7, 7}, {100, 0}} {
		got, err := ReaderAt(r, c.off, c.size)
		if want := Checksum(data[c.off : c.off+c.size]); err != nil || got != want {
			t.Errorf("[%d, +%d): %x %v, want %x", c.off, c.size, got, err, want)
		}
	}
	if _, err := ReaderAt(r, 10, int64(len(data))); err != io.EOF {
		t.Errorf("past the end: %v, want io.EOF", err)
	}
}

// Combine joins two sums as the SDK's CRC64Combine does, and Uncombine
// takes the second back out, for lengths from 0 to past a mebibyte.
func TestCombineAndUncombine(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 1<<20+777)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	for _, lens := range [][2]int{{0, 0}, {0, 5}, {5, 0}, {1, 1}, {100, 1000}, {4096, 1}, {1 << 20, 777}, {3, 1<<20 + 700}} {
		a, b := buf[:lens[0]], buf[lens[0]:lens[0]+lens[1]]
		crcA, crcB, crcAB := Checksum(a), Checksum(b), Checksum(buf[:lens[0]+lens[1]])
		if got := Combine(crcA, crcB, int64(len(b))); got != crcAB {
			t.Errorf("Combine %v: %#x, want %#x", lens, got, crcAB)
		}
		if got := oss.CRC64Combine(crcA, crcB, uint64(len(b))); got != crcAB {
			t.Errorf("the SDK's combine %v: %#x, want %#x", lens, got, crcAB)
		}
		if got := Uncombine(crcAB, crcB, int64(len(b))); got != crcA {
			t.Errorf("Uncombine %v: %#x, want %#x", lens, got, crcA)
		}
	}
	// Lengths of objects, not buffers: x^(8n) and x^(-8n) cancel.
	for _, n := range []int64{1, 1 << 30, 5 << 40, 1<<62 - 1} {
		if got := mulModP(xPow8(n), xPow8(-n)); got != one {
			t.Errorf("x^(8·%d)·x^(-8·%d) = %#x", n, n, got)
		}
	}
}
