package store

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// List walks a sorted index of the keys; every page, over random keys,
// deletions, prefixes, delimiters and page sizes, is the one a pass over
// all keys gives.
func TestListMatchesAPassOverAllKeys(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	s := NewMemory()
	s.CreateBucket("b")
	all := map[string]bool{}
	parts := []string{"a", "b", "a/", "b/", "ab", "/", "z"}
	randomKey := func() string {
		var k strings.Builder
		for range 1 + r.IntN(5) {
			k.WriteString(parts[r.IntN(len(parts))])
		}
		return k.String()
	}
	for range 300 {
		k := randomKey()
		if r.IntN(4) == 0 {
			if err := s.Delete("b", k); err != nil {
				t.Fatal(err)
			}
			delete(all, k)
			continue
		}
		if _, err := s.Put("b", k, strings.NewReader("x"), Attrs{}, false); err != nil {
			t.Fatal(err)
		}
		all[k] = true
	}
	for range 300 {
		prefix := randomKey()
		req := ListRequest{Prefix: prefix[:r.IntN(min(3, len(prefix)+1))], MaxKeys: 1 + r.IntN(10)}
		if r.IntN(2) == 0 {
			req.Delimiter = "/"
		}
		if r.IntN(3) == 0 {
			req.StartAfter = randomKey()
		}
		got, err := s.List("b", req)
		if err != nil {
			t.Fatal(err)
		}
		if want := listByPass(all, req); fmt.Sprint(summary(got)) != fmt.Sprint(summary(want)) {
			t.Fatalf("%+v:\n got %v\nwant %v", req, summary(got), summary(want))
		}
	}
}

func summary(r ListResult) []string {
	var out []string
	for _, o := range r.Objects {
		out = append(out, o.Key)
	}
	out = append(out, "prefixes:")
	out = append(out, r.Prefixes...)
	return append(out, fmt.Sprint("truncated:", r.Truncated, " next:", r.Next))
}

// listByPass is List as a pass over every key.
func listByPass(all map[string]bool, req ListRequest) ListResult {
	var keys []string
	for k := range all {
		if strings.HasPrefix(k, req.Prefix) && k > req.StartAfter {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var res ListResult
	for _, k := range keys {
		name, isPrefix := k, false
		if req.Delimiter != "" {
			if i := strings.Index(k[len(req.Prefix):], req.Delimiter); i >= 0 {
				name, isPrefix = k[:len(req.Prefix)+i+len(req.Delimiter)], true
			}
		}
		if isPrefix && len(res.Prefixes) > 0 && res.Prefixes[len(res.Prefixes)-1] == name {
			continue
		}
		if len(res.Objects)+len(res.Prefixes) == req.MaxKeys {
			res.Truncated = true
			break
		}
		if isPrefix {
			res.Prefixes = append(res.Prefixes, name)
			res.Next = name + "\U0010FFFF"
		} else {
			res.Objects = append(res.Objects, Object{Key: k})
			res.Next = k
		}
	}
	if !res.Truncated {
		res.Next = ""
	}
	return res
}
