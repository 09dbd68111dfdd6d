package cache

// Holes. A write past the end of a staging file, and a truncate up, leave
// a gap that reads as zeros and takes no disk (a sparse copy: cp over the
// holes of a VM image). The gap is not accounted in the cache's used
// bytes: a 100 GB image holding 10 GB of data goes through a 20 GB cache.
// A later write into a hole accounts the bytes it fills.

// span is the byte range [from, to).
type span struct{ from, to int64 }

// spans are sorted, disjoint byte ranges: a staging file's holes, and the
// ranges still as its source holds them (source.go).
type spans []span

// in is how many bytes of [from, to) the spans cover.
func (h spans) in(from, to int64) int64 {
	var n int64
	for _, s := range h {
		n += max(0, min(to, s.to)-max(from, s.from))
	}
	return n
}

// total is the bytes the spans cover.
func (h spans) total() int64 {
	var n int64
	for _, s := range h {
		n += s.to - s.from
	}
	return n
}

// add records [from, to), which lies past every span.
func (h spans) add(from, to int64) spans {
	if from >= to {
		return h
	}
	if n := len(h); n > 0 && h[n-1].to == from {
		h[n-1].to = to
		return h
	}
	return append(h, span{from, to})
}

// cut removes [from, to) from the spans (a hole written or cut off, a
// range changed).
func (h spans) cut(from, to int64) spans {
	if from >= to || h.in(from, to) == 0 {
		return h
	}
	var out spans
	for _, s := range h {
		if s.to <= from || s.from >= to {
			out = append(out, s)
			continue
		}
		if s.from < from {
			out = append(out, span{s.from, from})
		}
		if s.to > to {
			out = append(out, span{to, s.to})
		}
	}
	return out
}
