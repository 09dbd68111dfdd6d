package cache

import "syscall"

// oTmpfile creates an unnamed file in a directory (Linux 3.11+).
const oTmpfile = 0x400000 | syscall.O_DIRECTORY
