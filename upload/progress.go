package upload

import (
	"log/slog"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
)

// progressEvery is how often a long upload logs its progress.
const progressEvery = 5 * time.Second

// progress logs a long upload's progress (DESIGN §7): a line every
// progressEvery once it has run that long, with the bytes sent and the
// rate — a stream's, or a whole file's, parts at a time.
type progress struct {
	log   *slog.Logger
	key   string
	total int64 // -1: not known yet (a stream)
	now   func() time.Time
	start time.Time

	mu   sync.Mutex
	last time.Time // GUARDED_BY(mu)
}

func (u *Uploader) newProgress(key string, total int64) *progress {
	now := u.now()
	return &progress{log: u.log, key: key, total: total, now: u.now, start: now, last: now}
}

// sent says how many bytes the bucket holds so far.
func (p *progress) sent(n int64) {
	now := p.now()
	p.mu.Lock()
	due := now.Sub(p.last) >= progressEvery
	if due {
		p.last = now
	}
	p.mu.Unlock()
	if !due {
		return
	}
	attrs := []any{"key", p.key, "sent", humanize.IBytes(uint64(n))}
	if p.total >= 0 {
		attrs = append(attrs, "of", humanize.IBytes(uint64(p.total)))
	}
	p.log.Info("uploading", append(attrs, "rate", rate(n, now.Sub(p.start)))...)
}
