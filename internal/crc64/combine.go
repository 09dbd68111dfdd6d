package crc64

import "hash/crc64"

// Sums of concatenations. The CRC of a followed by b is the CRC of a
// multiplied by x^(8·len(b)) modulo the polynomial, plus the CRC of b
// (zlib's crc32_combine). Combine is that; Uncombine undoes it, to learn
// the sum of a prefix of an object from the object's sum and the sum of
// the rest: x is invertible modulo the polynomial, as its x^0 term is
// set. Values are reflected, as the CRCs: bit 63 is x^0.

// one is x^0, reflected.
const one = uint64(1) << 63

// mulModP is a·b modulo the polynomial.
func mulModP(a, b uint64) uint64 {
	var p uint64
	for m := one; a != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
			a &^= m
		}
		// b·x
		if b&1 != 0 {
			b = b>>1 ^ crc64.ECMA
		} else {
			b >>= 1
		}
	}
	return p
}

// powModP is a^e modulo the polynomial.
func powModP(a, e uint64) uint64 {
	r := one
	for ; e != 0; e >>= 1 {
		if e&1 != 0 {
			r = mulModP(r, a)
		}
		a = mulModP(a, a)
	}
	return r
}

// xInv is x^-1: the inverse of b·x above, applied to x^0.
var xInv = (one^crc64.ECMA)<<1 | 1

// xPow8 is x^(8n) modulo the polynomial, xInv's power for n < 0.
func xPow8(n int64) uint64 {
	if n < 0 {
		return powModP(xInv, 8*uint64(-n))
	}
	return powModP(one>>1, 8*uint64(n))
}

// Combine is the CRC of a followed by b, from a's CRC, b's and b's length.
func Combine(crcA, crcB uint64, lenB int64) uint64 {
	return mulModP(xPow8(lenB), crcA) ^ crcB
}

// Uncombine is the CRC of a, from the CRC of a followed by b, b's CRC and
// b's length.
func Uncombine(crcAB, crcB uint64, lenB int64) uint64 {
	return mulModP(xPow8(-lenB), crcAB^crcB)
}
