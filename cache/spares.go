package cache

import (
	"os"
	"path/filepath"

	"github.com/ossmount/ossmount/internal/fsutil"
)

// Spares. An emptied staging file comes back to the idle pool only once
// its upload is done, and a copy of many small files in write-back mode
// runs hundreds of files ahead of its uploads (261–514 of 2,000 in the
// bench). A staging file made on demand costs the writer a file creation
// in its create and a sync of the directory in its close; spares are made
// ahead in the background, a batch at a time with one directory sync, and
// wait in the idle pool.
const (
	spareBatch = 64
	spareLow   = 32 // fewer idle files than this start a batch
)

// makeSparesLocked starts a batch of spares unless the idle pool has
// enough, a batch is being made, or the journal's staging files cannot be
// reused. LOCKS_REQUIRED(d.mu)
func (d *Dir) makeSparesLocked() {
	n := min(spareBatch, d.idleRoomLocked())
	if d.named == "" || !d.reuseNamed || d.sparesMaking > 0 || d.closed || len(d.idle) >= spareLow || n <= 0 {
		return
	}
	d.sparesMaking = n
	d.spares.Add(1)
	go func() {
		defer d.spares.Done()
		made := make([]idleFile, 0, n)
		for range n {
			f, err := os.OpenFile(filepath.Join(d.named, newID()), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				break // the writer that needs one will say why
			}
			made = append(made, idleFile{f: f, name: f.Name()})
		}
		durable := fsutil.SyncDir(d.named) == nil
		d.mu.Lock()
		d.sparesMaking = 0
		room := d.idleRoomLocked()
		if d.closed {
			room = 0
		}
		for i := range made[:min(room, len(made))] {
			made[i].durable = durable
			d.idle = append(d.idle, made[i])
		}
		d.mu.Unlock()
		for _, i := range made[min(room, len(made)):] {
			i.delete()
		}
	}()
}
