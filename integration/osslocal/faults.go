package osslocal

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Fault is one injected failure, kept as data: requests of Op (empty: any)
// after the first After matching ones, Count times (0: every time), answer
// with Status (an OSS error document), stall for Stall first, have their
// connection cut (Cut) once half the request body has been read or
// (CutBody) half the response body sent, or succeed with a wrong CRC64 in
// the response (BadCRC). For tests in the same process, Before runs when
// the fault fires, before the request is served, and OnCut after a CutBody
// cut, before the client sees it.
type Fault struct {
	Op      string
	Status  int
	Stall   time.Duration
	Cut     bool
	CutBody bool
	BadCRC  bool
	After   int
	Count   int
	Before  func()
	OnCut   func()

	seen, fired int
}

// ParseFault reads a fault from "op=PutObject,status=500,after=1,count=2,
// stall=2s,cut" (or cutbody, badcrc).
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
		case "badcrc":
			f.BadCRC = true
		case "after":
			f.After, err = strconv.Atoi(v)
		case "count":
			f.Count, err = strconv.Atoi(v)
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
	f.fired++
	return true
}
