package fs

// usingKeys takes keys shared for op and returns its release.
func (f *FS) usingKeys(op string) (release func()) {
	if !f.keys.TryRLock() {
		f.log.Debug(op + " waits for a rename to finish")
		f.keys.RLock()
	}
	return f.keys.RUnlock
}

// renaming takes keys exclusively for a rename and returns its release.
func (f *FS) renaming() (release func()) {
	if !f.keys.TryLock() {
		f.log.Debug("a rename waits for the operations in progress")
		f.keys.Lock()
	}
	f.renames.Add(1)
	return f.keys.Unlock
}

// keyHold is an operation's shared hold of the keys that it lets go while
// it asks the bucket something (a lookup's HEAD, a listing): a rename, and
// every operation queued behind a waiting rename, then waits for no
// network round trip. Only requests without effects are made so, since a
// rename meanwhile may have given the key to another object: the
// operation takes the keys again, learns that a rename ran, and forgets
// the answer (a lookup asks again, a listing is not cached).
type keyHold struct {
	f      *FS
	op     string
	held   bool
	pinned bool // keep the keys across requests: a last attempt
}

// askAttempts bounds how often an operation asks the bucket again because
// a rename overtook it; the last attempt holds the keys throughout.
const askAttempts = 3

// holdKeys takes keys shared for op.
func (f *FS) holdKeys(op string) *keyHold {
	f.usingKeys(op)
	return &keyHold{f: f, op: op, held: true}
}

// around runs ask without the keys (unless pinned) and reports whether a
// rename ran meanwhile. The keys are held again when it returns.
func (h *keyHold) around(ask func()) (renamed bool) {
	if h.pinned {
		ask()
		return false
	}
	before := h.f.renames.Load() // stable: no rename runs while held
	h.letGo()
	ask()
	h.f.usingKeys(h.op)
	h.held = true
	return h.f.renames.Load() != before
}

// retry runs try, which reports whether a rename overtook it, until one
// did not.
func (h *keyHold) retry(try func() (renamed bool)) {
	for attempt := 1; ; attempt++ {
		h.pinned = attempt == askAttempts
		if !try() {
			return
		}
		h.f.log.Debug(h.op + " asks again: a rename ran while it asked the bucket")
	}
}

// letGo ends the hold; the operation must not act on a key afterwards.
func (h *keyHold) letGo() {
	if h.held {
		h.held = false
		h.f.keys.RUnlock()
	}
}
