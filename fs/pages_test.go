package fs

import (
	"slices"
	"testing"
)

// Reads join into the ranges they cover, in any order; a file is covered
// only by one range from 0 to its end; too many ranges give up.
func TestPageRanges(t *testing.T) {
	var r pageRanges
	for _, x := range [][2]int64{{128, 256}, {0, 64}, {512, 600}, {64, 128}, {300, 400}, {250, 310}, {10, 20}} {
		if !r.add(x[0], x[1]) {
			t.Fatalf("add %v: too many", x)
		}
	}
	if want := (pageRanges{{0, 400}, {512, 600}}); !slices.Equal(r, want) {
		t.Fatalf("ranges %v, want %v", r, want)
	}
	if r.covers(400) {
		t.Error("two ranges cover a file")
	}
	r.add(400, 512)
	if !r.covers(600) || !r.covers(100) || r.covers(601) || (pageRanges{}).covers(0) {
		t.Errorf("%v: covers wrong", r)
	}
	r = nil
	for i := range int64(maxPageRanges) {
		if !r.add(i*10, i*10+5) {
			t.Fatalf("range %d: too many", i)
		}
	}
	if r.add(maxPageRanges*10, maxPageRanges*10+5) {
		t.Errorf("%d ranges taken", len(r))
	}
}

// An ETag names one version with or without its quotes; none names none.
func TestSameVersion(t *testing.T) {
	for _, c := range []struct {
		a, b string
		same bool
	}{
		{`"abc"`, `"abc"`, true}, {`"abc"`, `abc`, true}, {`abc-2`, `"abc-2"`, true},
		{`"abc"`, `"abd"`, false}, {``, ``, false}, {``, `"abc"`, false}, {mixedPages, `"abc"`, false},
	} {
		if got := sameVersion(c.a, c.b); got != c.same {
			t.Errorf("sameVersion(%q, %q) = %v", c.a, c.b, got)
		}
	}
}
