package main

import (
	"os"
	"sync"
)

// logFile is a log file that SIGHUP reopens at its path, as daemons do for
// logrotate, which renames the file and then sends the signal: the mount
// goes on logging into the new file instead of the renamed one.
type logFile struct {
	path string
	mu   sync.Mutex
	f    *os.File // GUARDED_BY(mu)
}

func openLogFile(path string) (*logFile, error) {
	f, err := openAppending(path)
	if err != nil {
		return nil, err
	}
	return &logFile{path: path, f: f}, nil
}

// openAppending opens path to append to it, made 0600 if it is new.
func openAppending(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

// Reopen opens the path anew; on failure the old file stays in use.
func (l *logFile) Reopen() error {
	f, err := openAppending(l.path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	return old.Close()
}

func (l *logFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
