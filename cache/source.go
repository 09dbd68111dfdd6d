package cache

// Where staged content came from. A file edited in place or appended to
// is first copied in whole from its object (a download), then uploaded
// whole at the close: a line appended to a 1 GB log sent the gigabyte
// back. The staging file remembers the object version it was copied from
// and which of its bytes are still as they were, so that an upload can
// have the server copy those ranges (UploadPartCopy) and send only the
// rest (upload.Uploader). Every change goes through WriteAt, Truncate or a
// dropped part, and each takes its range out; a mistake here could only
// make an upload send what it could have copied — the server's CRC-64 of
// each copied part is checked against the staged bytes' before the upload
// completes.

// maxCleanRanges bounds the unchanged ranges kept: a file written at
// random in small pieces is uploaded whole instead.
const maxCleanRanges = 1024

// source is the object version staged content was copied from, and its
// byte ranges that are unchanged (at the same offsets).
type source struct {
	key, etag string
	clean     spans // the ranges
}

// SetSource says the staged content is, as of now, byte for byte the
// object key in its version etag. Copies made of it since (CopyTo, its
// followers) learn it too: what they left unchanged since is that version.
// A file whose start left the disk (a streamed upload's, streamed.go) has
// no bytes left to check copied parts against: it gets no source.
func (s *Staging) SetSource(key, etag string) {
	s.mu.Lock()
	s.src = nil
	if s.dropped.Load() == 0 {
		s.src = &source{key: key, etag: etag, clean: spans{}.add(0, s.size)}
	}
	if s.absent != nil {
		// The object holds the absent bytes now (an upload copied them).
		s.absent.key, s.absent.etag = key, etag
	}
	followers := s.followers
	s.followers = nil
	s.mu.Unlock()
	for _, f := range followers {
		f.leaderIs(s, key, etag)
	}
}

// Followers. In write-back mode a file written again while its previous
// version is being uploaded works on a copy of it (CopyTo). The copy
// remembers the object the original came from — which that upload is
// about to replace — so its own upload found every copied part's source
// gone and sent the whole file. A copy now also tracks what it left
// unchanged since it was made, and when the original becomes an object
// version (SetSource after its upload), that is the copy's source.

// follower is what a copy knows of the staging file it was copied from.
type follower struct {
	leader *Staging
	since  spans // ranges unchanged since the copy was made
}

// follow makes s, just copied from leader's content, a follower of it;
// seen is the leader's src when the copy began.
func (s *Staging) follow(leader *Staging, seen *source) {
	s.mu.Lock()
	s.follows = &follower{leader: leader, since: spans{}.add(0, s.size)}
	s.mu.Unlock()
	leader.mu.Lock()
	now := leader.src
	leader.followers = append(leader.followers, s)
	leader.mu.Unlock()
	if now != nil && now != seen {
		s.leaderIs(leader, now.key, now.etag) // it became an object meanwhile
	}
}

// leaderIs says s's leader is now the object key in version etag.
func (s *Staging) leaderIs(leader *Staging, key, etag string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.follows == nil || s.follows.leader != leader {
		return
	}
	if len(s.follows.since) > 0 {
		s.src = &source{key: key, etag: etag, clean: s.follows.since}
	}
	s.follows = nil
}

// Unchanged reports whether bytes [off, end) are still those of the object
// the staged content came from (SetSource), and which object version
// that is.
func (s *Staging) Unchanged(off, end int64) (key, etag string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.src == nil || off >= end || s.src.clean.in(off, end) != end-off {
		return "", "", false
	}
	return s.src.key, s.src.etag, true
}

// changedLocked takes [off, end) out of the unchanged ranges.
// LOCKS_REQUIRED(s.mu)
func (s *Staging) changedLocked(off, end int64) {
	// Copies made before no longer hold this content (a sealed file is
	// never changed; this keeps it so).
	s.followers = nil
	if s.follows != nil {
		s.follows.since = s.follows.since.cut(off, end)
		if len(s.follows.since) > maxCleanRanges {
			s.follows = nil
		}
	}
	if s.src == nil {
		return
	}
	s.src.clean = s.src.clean.cut(off, end)
	if len(s.src.clean) == 0 || len(s.src.clean) > maxCleanRanges {
		s.src = nil
	}
}

// copySourceLocked is src for a copy of the staged content.
// LOCKS_REQUIRED(s.mu)
func (s *Staging) copySourceLocked() *source {
	if s.src == nil {
		return nil
	}
	return &source{key: s.src.key, etag: s.src.etag, clean: append(spans(nil), s.src.clean...)}
}
