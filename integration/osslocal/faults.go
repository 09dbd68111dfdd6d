package osslocal

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Fault is one injected failure, kept as data: requests of Op (empty: any)
// after the first After matching ones, Count times (0: every time), answer
// with Status (an OSS error document), stall for Stall first, have their
// connection cut (Cut) once half the request body has been read or
// (CutBody) half the response body sent, or, served, before any of the
// reply (LoseReply: the client cannot know the request took effect), or
// succeed with a wrong CRC64 in the response (BadCRC). For tests in the same process, Before runs when
// the fault fires, before the request is served, and OnCut after a CutBody
// cut, before the client sees it. With Rate (between 0 and 1) it fires for
// that share of the matching requests, drawn from a generator seeded with
// Seed: the same requests in the same order meet the same failures.
type Fault struct {
	Op        string
	Status    int
	Stall     time.Duration
	Cut       bool
	CutBody   bool
	LoseReply bool
	BadCRC    bool
	After     int
	Count     int
	Before    func()
	OnCut     func()
	Rate      float64
	Seed      uint64

	seen, fired int
	draws       *rand.Rand
}

// ParseFault reads a fault from "op=PutObject,status=500,after=1,count=2,
// stall=2s,cut" (or cutbody, losereply, badcrc; rate=0.1,seed=7 for an
// error rate).
func ParseFault(s string) (Fault, error) {
	var f Fault
	for _, part := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		var err error
		switch k {
		case "op":
			f.Op = v
		case "status":
			f.Status, err = strconv.Atoi(v)
		case "stall":
			f.Stall, err = time.ParseDuration(v)
		case "cut":
			f.Cut = true
		case "cutbody":
			f.CutBody = true
		case "losereply":
			f.LoseReply = true
		case "badcrc":
			f.BadCRC = true
		case "after":
			f.After, err = strconv.Atoi(v)
		case "count":
			f.Count, err = strconv.Atoi(v)
		case "rate":
			f.Rate, err = strconv.ParseFloat(v, 64)
			if err == nil && (f.Rate <= 0 || f.Rate > 1) {
				err = fmt.Errorf("rate %v is not in (0, 1]", f.Rate)
			}
		case "seed":
			f.Seed, err = strconv.ParseUint(v, 10, 64)
		default:
			err = fmt.Errorf("unknown field %q", k)
		}
		if err != nil {
			return Fault{}, fmt.Errorf("fault %q: %v", s, err)
		}
	}
	return f, nil
}

// match decides whether f applies to this request of op and records it.
// LOCKS_REQUIRED(Server.mu)
func (f *Fault) match(op string) bool {
	if f.Op != "" && f.Op != op {
		return false
	}
	f.seen++
	if f.seen <= f.After || (f.Count > 0 && f.fired >= f.Count) {
		return false
	}
	if f.Rate > 0 {
		if f.draws == nil {
			f.draws = rand.New(rand.NewPCG(f.Seed, 1))
		}
		if f.draws.Float64() >= f.Rate {
			return false
		}
	}
	f.fired++
	return true
}
