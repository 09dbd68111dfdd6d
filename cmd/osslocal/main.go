// Command osslocal is a local OSS-compatible server (DESIGN §8):
//
//	osslocal --addr 127.0.0.1:PORT [--root DIR] [--bucket NAME]...
//	         [--access-key-id ID --access-key-secret SECRET]
//	         [--latency D] [--fault op=PutObject,status=500,count=1]...
//
// Without --root everything is kept in memory.
//
//	osslocal ls --endpoint URL --bucket NAME [--access-key-id ID --access-key-secret S]
//
// lists a bucket's objects with their sizes.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/ossmount/ossmount/bucket/store"
	"github.com/ossmount/ossmount/integration/osslocal"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "ls" {
		if err := listObjects(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "osslocal ls:", err)
			os.Exit(1)
		}
		return
	}
	addr := flag.String("addr", "127.0.0.1:9000", "listen address")
	root := flag.String("root", "", "directory to keep buckets in (empty: memory)")
	keyID := flag.String("access-key-id", "", "access key id requests must be signed with")
	keySecret := flag.String("access-key-secret", "", "its secret")
	latency := flag.Duration("latency", 0, "delay added to every request")
	verbose := flag.Bool("v", false, "log every object written")
	var buckets, faults listFlag
	flag.Var(&buckets, "bucket", "bucket to create at start (repeatable)")
	flag.Var(&faults, "fault", "fault to inject, e.g. op=PutObject,status=500,after=1,count=2 or op=PutObject,status=503,rate=0.1 (repeatable)")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := runServer(*addr, *root, *keyID, *keySecret, *latency, buckets, faults, log); err != nil {
		fmt.Fprintln(os.Stderr, "osslocal:", err)
		os.Exit(1)
	}
}

func runServer(addr, root, keyID, keySecret string, latency time.Duration, buckets, faults []string, log *slog.Logger) error {
	var st *store.Store
	if root == "" {
		st = store.NewMemory()
	} else {
		var err error
		if st, err = store.NewDir(root); err != nil {
			return err
		}
	}
	for _, b := range buckets {
		if err := st.CreateBucket(b); err != nil {
			return err
		}
	}
	keys := map[string]string{}
	if keyID != "" {
		keys[keyID] = keySecret
	}
	srv := osslocal.New(osslocal.Config{Store: st, Keys: keys, Log: log, Latency: latency})
	for _, f := range faults {
		fault, err := osslocal.ParseFault(f)
		if err != nil {
			return err
		}
		srv.AddFault(fault)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	log.Info("serving", "addr", ln.Addr().String(), "root", root, "buckets", strings.Join(buckets, ","))
	return http.Serve(ln, srv)
}
