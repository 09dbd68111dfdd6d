#include "textflag.h"

// func fold(s uint64, p []byte, keys *[4]uint64) (lo, hi uint64)
// After hash/crc32's ieeeCLMUL: four 128-bit lanes, each multiplied
// forward by 512 bits per 64 bytes read, then folded into one.
TEXT ·fold(SB), NOSPLIT, $0-56
	MOVQ s+0(FP), X0
	MOVQ p_base+8(FP), SI
	MOVQ p_len+16(FP), CX
	MOVQ keys+32(FP), DX

	MOVOU (SI), X1
	MOVOU 16(SI), X2
	MOVOU 32(SI), X3
	MOVOU 48(SI), X4
	PXOR  X0, X1 // the register's state goes into the first 8 bytes
	ADDQ  $64, SI
	SUBQ  $64, CX
	MOVOU (DX), X0 // x^575, x^511

	CMPQ CX, $64
	JB   lanes

loop:
	MOVOA X1, X5
	MOVOA X2, X6
	MOVOA X3, X7
	MOVOA X4, X8

	PCLMULQDQ $0x00, X0, X1
	PCLMULQDQ $0x00, X0, X2
	PCLMULQDQ $0x00, X0, X3
	PCLMULQDQ $0x00, X0, X4

	MOVOU (SI), X11
	MOVOU 16(SI), X12
	MOVOU 32(SI), X13
	MOVOU 48(SI), X14

	PCLMULQDQ $0x11, X0, X5
	PCLMULQDQ $0x11, X0, X6
	PCLMULQDQ $0x11, X0, X7
	PCLMULQDQ $0x11, X0, X8

	PXOR X5, X1
	PXOR X6, X2
	PXOR X7, X3
	PXOR X8, X4

	PXOR X11, X1
	PXOR X12, X2
	PXOR X13, X3
	PXOR X14, X4

	ADDQ $64, SI
	SUBQ $64, CX
	CMPQ CX, $64
	JAE  loop

lanes:
	MOVOU 16(DX), X0 // x^191, x^127

	MOVOA     X1, X5
	PCLMULQDQ $0x00, X0, X1
	PCLMULQDQ $0x11, X0, X5
	PXOR      X5, X1
	PXOR      X1, X2

	MOVOA     X2, X5
	PCLMULQDQ $0x00, X0, X2
	PCLMULQDQ $0x11, X0, X5
	PXOR      X5, X2
	PXOR      X2, X3

	MOVOA     X3, X5
	PCLMULQDQ $0x00, X0, X3
	PCLMULQDQ $0x11, X0, X5
	PXOR      X5, X3
	PXOR      X3, X4

	MOVQ   X4, AX
	PSRLDQ $8, X4
	MOVQ   X4, BX
	MOVQ   AX, lo+40(FP)
	MOVQ   BX, hi+48(FP)
	RET
