package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/dustin/go-humanize"

	"github.com/ossmount/ossmount/bucket"
)

// listObjects implements `osslocal ls`: print every object of a bucket with
// its humanized size, through the same SDK client ossmount uses.
func listObjects(args []string) error {
	fl := flag.NewFlagSet("ls", flag.ExitOnError)
	endpoint := fl.String("endpoint", "http://127.0.0.1:9000", "server URL")
	name := fl.String("bucket", "", "bucket to list")
	keyID := fl.String("access-key-id", os.Getenv("OSS_ACCESS_KEY_ID"), "access key id")
	keySecret := fl.String("access-key-secret", os.Getenv("OSS_ACCESS_KEY_SECRET"), "its secret")
	fl.Parse(args)
	b := bucket.NewOSS(bucket.Config{Bucket: *name, Endpoint: *endpoint, Region: "local", PathStyle: true,
		Credentials: &bucket.Credentials{AccessKeyID: *keyID, AccessKeySecret: *keySecret}})
	var count, total int64
	token := ""
	for {
		page, err := b.List(context.Background(), bucket.ListRequest{ContinuationToken: token, MaxKeys: 1000})
		if err != nil {
			return err
		}
		for _, o := range page.Objects {
			fmt.Printf("%10s  %s\n", humanize.IBytes(uint64(o.Size)), o.Key)
			count++
			total += o.Size
		}
		if token = page.NextToken; token == "" {
			break
		}
	}
	fmt.Printf("%d objects, %s in bucket %s\n", count, humanize.IBytes(uint64(total)), *name)
	return nil
}
