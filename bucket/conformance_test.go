package bucket_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/ossmount/ossmount/bucket"
	"github.com/ossmount/ossmount/bucket/store"
	"github.com/ossmount/ossmount/integration/osslocal"
	"github.com/ossmount/ossmount/internal/crc64"
)

// Every Bucket implementation runs the same suite: the fake, the SDK
// against osslocal (memory and directory stores), and the SDK against real
// OSS when OSSMOUNT_TEST_BUCKET and credentials are in the environment.
func implementations(t *testing.T) map[string]func(t *testing.T) bucket.Bucket {
	impls := map[string]func(t *testing.T) bucket.Bucket{
		"fake": func(t *testing.T) bucket.Bucket { return bucket.NewFake("test-bucket") },
		"osslocal-memory": func(t *testing.T) bucket.Bucket {
			return localBucket(t, store.NewMemory())
		},
		"osslocal-dir": func(t *testing.T) bucket.Bucket {
			s, err := store.NewDir(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return localBucket(t, s)
		},
	}
	if name := os.Getenv("OSSMOUNT_TEST_BUCKET"); name != "" {
		impls["oss"] = func(t *testing.T) bucket.Bucket {
			return bucket.NewOSS(bucket.Config{Bucket: name, Endpoint: os.Getenv("OSSMOUNT_TEST_ENDPOINT"), Region: os.Getenv("OSSMOUNT_TEST_REGION")})
		}
	}
	return impls
}

func localBucket(t *testing.T, s *store.Store) bucket.Bucket {
	cfg := localConfig(serveLocal(t, s))
	cfg.PartSize = 100 << 10
	return bucket.NewOSS(cfg)
}

// serveLocal serves s, with test-bucket in it, over osslocal with the
// given faults until the test ends, and returns its URL.
func serveLocal(t *testing.T, s *store.Store, faults ...osslocal.Fault) string {
	if err := s.CreateBucket("test-bucket"); err != nil {
		t.Fatal(err)
	}
	srv := osslocal.New(osslocal.Config{Store: s, Keys: map[string]string{"id": "secret"}})
	for _, f := range faults {
		srv.AddFault(f)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return hs.URL
}

// localConfig is the configuration of test-bucket at an osslocal URL.
func localConfig(url string) bucket.Config {
	return bucket.Config{Bucket: "test-bucket", Endpoint: url, Region: "local", PathStyle: true,
		Credentials: &bucket.Credentials{AccessKeyID: "id", AccessKeySecret: "secret"}}
}

func put(t *testing.T, b bucket.Bucket, key string, data []byte, attrs bucket.Attrs) {
	t.Helper()
	if _, err := b.Put(context.Background(), bucket.PutRequest{Key: key, Body: bytes.NewReader(data), Size: int64(len(data)), Attrs: attrs}); err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
}

func get(t *testing.T, b bucket.Bucket, key string, off, n int64) []byte {
	t.Helper()
	r, err := b.Get(context.Background(), bucket.GetRequest{Key: key, Off: off, Length: n})
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestConformance(t *testing.T) {
	ctx := context.Background()
	for name, newBucket := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("PutHeadGet", func(t *testing.T) {
				b := newBucket(t)
				data := []byte("hello, world")
				put(t, b, "dir/a b+c%.txt", data, bucket.Attrs{ContentType: "text/plain", Meta: map[string]string{"mode": "33188", "mtime": "1700000000"}})
				info, err := b.Head(ctx, "dir/a b+c%.txt")
				if err != nil {
					t.Fatal(err)
				}
				if info.Size != int64(len(data)) || info.ContentType != "text/plain" || info.Meta["mode"] != "33188" || info.Meta["mtime"] != "1700000000" {
					t.Fatalf("head = %+v", info)
				}
				if want := crc64.Checksum(data); info.CRC64 != want {
					t.Errorf("head's CRC-64 %d, want %d", info.CRC64, want)
				}
				if got := get(t, b, "dir/a b+c%.txt", 0, -1); !bytes.Equal(got, data) {
					t.Fatalf("get = %q", got)
				}
				if got := get(t, b, "dir/a b+c%.txt", 7, 5); string(got) != "world" {
					t.Fatalf("ranged get = %q", got)
				}
			})
			t.Run("RangeOverAndPastTheEnd", func(t *testing.T) {
				// An object shorter than a reader thought: what is there,
				// then nothing — never the object from its start (OSS's
				// default answer to a range past the end).
				b := newBucket(t)
				put(t, b, "k", []byte("abcdef"), bucket.Attrs{})
				for _, c := range []struct {
					off, n int64
					want   string
				}{{3, 10, "def"}, {6, 4, ""}, {100, 4, ""}, {100, -1, ""}} {
					if got := get(t, b, "k", c.off, c.n); string(got) != c.want {
						t.Errorf("get %d+%d = %q, want %q", c.off, c.n, got, c.want)
					}
				}
			})
			t.Run("GetOfOneVersion", func(t *testing.T) {
				// If-Match reads the version whose ETag it names, or
				// fails as changed once another replaced it. A ranged
				// body tells the whole version's size.
				b := newBucket(t)
				put(t, b, "k", []byte("first"), bucket.Attrs{})
				first, err := b.Get(ctx, bucket.GetRequest{Key: "k", Off: 1, Length: 2})
				if err != nil || first.ETag == "" || first.Size != 5 {
					t.Fatalf("get: %v, ETag %q, size %d", err, first.ETag, first.Size)
				}
				first.Close()
				again, err := b.Get(ctx, bucket.GetRequest{Key: "k", Off: 3, Length: -1, IfMatch: first.ETag})
				if err != nil {
					t.Fatalf("get of the same version: %v", err)
				}
				if data, _ := io.ReadAll(again); string(data) != "st" || again.ETag != first.ETag {
					t.Fatalf("read %q, ETag %q; want \"st\", %q", data, again.ETag, first.ETag)
				}
				again.Close()
				put(t, b, "k", []byte("second"), bucket.Attrs{})
				if r, err := b.Get(ctx, bucket.GetRequest{Key: "k", Off: 3, Length: -1, IfMatch: first.ETag}); !errors.Is(err, bucket.ErrChanged) {
					if err == nil {
						r.Close()
					}
					t.Fatalf("get of a replaced version: %v, want ErrChanged", err)
				}
			})
			t.Run("MissingIsNotFound", func(t *testing.T) {
				b := newBucket(t)
				if _, err := b.Head(ctx, "nope"); !errors.Is(err, bucket.ErrNotFound) {
					t.Fatalf("head missing: %v", err)
				}
				if _, err := b.Get(ctx, bucket.GetRequest{Key: "nope", Length: -1}); !errors.Is(err, bucket.ErrNotFound) {
					t.Fatalf("get missing: %v", err)
				}
				if err := b.Delete(ctx, "nope"); err != nil {
					t.Fatalf("delete missing: %v", err)
				}
			})
			t.Run("Overwrite", func(t *testing.T) {
				b := newBucket(t)
				put(t, b, "k", []byte("one"), bucket.Attrs{})
				put(t, b, "k", []byte("two!"), bucket.Attrs{})
				if got := get(t, b, "k", 0, -1); string(got) != "two!" {
					t.Fatalf("got %q", got)
				}
				_, err := b.Put(ctx, bucket.PutRequest{Key: "k", Body: strings.NewReader("x"), Size: 1, Attrs: bucket.Attrs{ForbidOverwrite: true}})
				if !errors.Is(err, bucket.ErrExists) {
					t.Fatalf("forbid overwrite: %v", err)
				}
			})
			t.Run("Empty", func(t *testing.T) {
				b := newBucket(t)
				put(t, b, "empty", nil, bucket.Attrs{})
				info, err := b.Head(ctx, "empty")
				if err != nil || info.Size != 0 {
					t.Fatalf("head = %+v, %v", info, err)
				}
			})
			t.Run("Multipart", func(t *testing.T) {
				b := newBucket(t)
				data := make([]byte, 350<<10+7)
				rand.Read(data)
				put(t, b, "big", data, bucket.Attrs{Meta: map[string]string{"mode": "33188"}})
				if got := get(t, b, "big", 0, -1); !bytes.Equal(got, data) {
					t.Fatal("multipart content differs")
				}
				if info, _ := b.Head(ctx, "big"); info.Meta["mode"] != "33188" {
					t.Fatalf("multipart meta = %v", info.Meta)
				}
			})
			t.Run("MultipartAPI", func(t *testing.T) {
				b := newBucket(t)
				data := make([]byte, 300<<10+5)
				rand.Read(data)
				id, err := b.StartMultipart(ctx, "mp", bucket.Attrs{ContentType: "text/plain", Meta: map[string]string{"mode": "33188"}})
				if err != nil {
					t.Fatal(err)
				}
				var parts []bucket.Part
				for i, off := 0, int64(0); off < int64(len(data)); i++ {
					n := min(int64(128<<10), int64(len(data))-off)
					p, err := b.UploadPart(ctx, "mp", id, i+1, bytes.NewReader(data), off, n)
					if err != nil {
						t.Fatal(err)
					}
					parts = append(parts, p)
					off += n
				}
				if _, err := b.CompleteMultipart(ctx, "mp", id, parts, bucket.Attrs{ACL: "private"}); err != nil {
					t.Fatal(err)
				}
				if got := get(t, b, "mp", 0, -1); !bytes.Equal(got, data) {
					t.Fatal("multipart API content differs")
				}
				info, _ := b.Head(ctx, "mp")
				if info.Meta["mode"] != "33188" || info.ContentType != "text/plain" {
					t.Fatalf("multipart API attrs %+v", info)
				}
				id2, _ := b.StartMultipart(ctx, "aborted", bucket.Attrs{})
				b.UploadPart(ctx, "aborted", id2, 1, bytes.NewReader(data), 0, 10)
				if err := b.AbortMultipart(ctx, "aborted", id2); err != nil {
					t.Fatal(err)
				}
				if _, err := b.Head(ctx, "aborted"); !errors.Is(err, bucket.ErrNotFound) {
					t.Fatalf("aborted upload left an object: %v", err)
				}
			})
			t.Run("CopyPart", func(t *testing.T) {
				// An edit of the middle of an object: its unchanged ranges
				// copied on the server, the rest sent.
				b := newBucket(t)
				data := make([]byte, 300<<10)
				rand.Read(data)
				put(t, b, "src", data, bucket.Attrs{})
				etag := etagOf(t, b, "src")
				edited := append([]byte(nil), data...)
				copy(edited[120<<10:], "an edit")
				id, err := b.StartMultipart(ctx, "edited", bucket.Attrs{})
				if err != nil {
					t.Fatal(err)
				}
				ranged := func(off, n int64) bucket.CopySource {
					return bucket.CopySource{Key: "src", ETag: etag, Off: off, Size: n, CRC64: crc64.Checksum(data[off : off+n])}
				}
				p1, err := b.CopyPart(ctx, "edited", id, 1, ranged(0, 100<<10))
				if err != nil {
					t.Fatal(err)
				}
				p2, err := b.UploadPart(ctx, "edited", id, 2, bytes.NewReader(edited), 100<<10, 100<<10)
				if err != nil {
					t.Fatal(err)
				}
				// Unsummed: the caller holds none of the bytes (a file
				// staged from its end); the part carries the server's sum.
				unsummed := ranged(200<<10, 100<<10)
				unsummed.CRC64, unsummed.Unsummed = 0, true
				p3, err := b.CopyPart(ctx, "edited", id, 3, unsummed)
				if err != nil {
					t.Fatal(err)
				}
				if want := crc64.Checksum(data[200<<10:]); p3.CRC64 != want {
					t.Fatalf("an unsummed copied part's CRC64 %d, want the server's %d", p3.CRC64, want)
				}
				wrongSum := ranged(200<<10, 100<<10)
				wrongSum.CRC64++
				if _, err := b.CopyPart(ctx, "edited", id, 4, wrongSum); !errors.Is(err, bucket.ErrIntegrity) {
					t.Fatalf("a copied part whose sum differs: %v, want ErrIntegrity", err)
				}
				other := ranged(0, 100<<10)
				other.ETag = `"another version"`
				if _, err := b.CopyPart(ctx, "edited", id, 4, other); !errors.Is(err, bucket.ErrChanged) {
					t.Fatalf("a copy of another version: %v, want ErrChanged", err)
				}
				if _, err := b.CompleteMultipart(ctx, "edited", id, []bucket.Part{p1, p2, p3}, bucket.Attrs{}); err != nil {
					t.Fatal(err)
				}
				if got := get(t, b, "edited", 0, -1); !bytes.Equal(got, edited) {
					t.Fatal("an object of copied and sent parts differs")
				}
			})
			t.Run("ListPagesAndDelimiter", func(t *testing.T) {
				b := newBucket(t)
				var want []string
				for i := 0; i < 25; i++ {
					k := fmt.Sprintf("d/f%02d", i)
					put(t, b, k, []byte("x"), bucket.Attrs{})
					want = append(want, k)
				}
				put(t, b, "d/sub/x", nil, bucket.Attrs{})
				put(t, b, "d/sub/y", nil, bucket.Attrs{})
				put(t, b, "d/sub2/", nil, bucket.Attrs{})
				put(t, b, "other", nil, bucket.Attrs{})
				var keys, prefixes []string
				tok := ""
				pages := 0
				for {
					page, err := b.List(ctx, bucket.ListRequest{Prefix: "d/", Delimiter: "/", ContinuationToken: tok, MaxKeys: 7})
					if err != nil {
						t.Fatal(err)
					}
					pages++
					for _, o := range page.Objects {
						keys = append(keys, o.Key)
					}
					prefixes = append(prefixes, page.Prefixes...)
					if tok = page.NextToken; tok == "" {
						break
					}
				}
				sort.Strings(keys)
				if strings.Join(keys, ",") != strings.Join(want, ",") || strings.Join(prefixes, ",") != "d/sub/,d/sub2/" || pages != 4 {
					t.Fatalf("keys %v prefixes %v pages %d", keys, prefixes, pages)
				}
			})
			t.Run("CopyKeepsOrReplacesMeta", func(t *testing.T) {
				b := newBucket(t)
				put(t, b, "src", []byte("data"), bucket.Attrs{ContentType: "text/plain", Meta: map[string]string{"mode": "33188"}})
				if err := b.Copy(ctx, bucket.CopyRequest{Src: "src", Dst: "dst", Size: -1}); err != nil {
					t.Fatal(err)
				}
				if info, _ := b.Head(ctx, "dst"); info.Meta["mode"] != "33188" {
					t.Fatalf("copy meta = %v", info.Meta)
				}
				if err := b.Copy(ctx, bucket.CopyRequest{Src: "src", Dst: "src", Size: 4, Attrs: &bucket.Attrs{ContentType: "text/plain", Meta: map[string]string{"mode": "33261"}}}); err != nil {
					t.Fatal(err)
				}
				info, _ := b.Head(ctx, "src")
				if info.Meta["mode"] != "33261" || string(get(t, b, "src", 0, -1)) != "data" {
					t.Fatalf("replace meta = %v", info.Meta)
				}
				if err := b.Copy(ctx, bucket.CopyRequest{Src: "missing", Dst: "x", Size: -1}); !errors.Is(err, bucket.ErrNotFound) {
					t.Fatalf("copy missing: %v", err)
				}
			})
		})
	}
}

func TestDirStoreSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := store.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := localBucket(t, s)
	put(t, b, "keep/me", []byte("durable"), bucket.Attrs{Meta: map[string]string{"mode": "33188"}})
	put(t, b, "keep/me", []byte("durable2"), bucket.Attrs{})
	s2, err := store.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	o, err := s2.Head("test-bucket", "keep/me")
	if err != nil || o.Size != 8 {
		t.Fatalf("after restart: %+v %v", o, err)
	}
}

func TestWrongCredentialsAreAccessDenied(t *testing.T) {
	url := serveLocal(t, store.NewMemory())
	for _, cred := range []bucket.Credentials{{AccessKeyID: "id", AccessKeySecret: "wrong"}, {AccessKeyID: "nobody", AccessKeySecret: "secret"}} {
		cfg := localConfig(url)
		cfg.Credentials = &cred
		b := bucket.NewOSS(cfg)
		_, err := b.List(context.Background(), bucket.ListRequest{MaxKeys: 1})
		if !errors.Is(err, bucket.ErrAccessDenied) {
			t.Fatalf("%s: %v", cred.AccessKeyID, err)
		}
		if strings.Contains(err.Error(), cred.AccessKeySecret) {
			t.Fatalf("error leaks the secret: %v", err)
		}
	}
}

// etagOf is the ETag of key's version, as a Get reports it.
func etagOf(t *testing.T, b bucket.Bucket, key string) string {
	t.Helper()
	body, err := b.Get(context.Background(), bucket.GetRequest{Key: key, Length: 1})
	if err != nil {
		t.Fatal(err)
	}
	body.Close()
	return body.ETag
}

// DeleteMany deletes every key it is given, a missing one too, and a key
// XML cannot carry (sent alone) as well as the others; it leaves the rest.
func TestDeleteMany(t *testing.T) {
	ctx := context.Background()
	for name, newBucket := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			b := newBucket(t)
			keys := []string{"d/a", "d/b&<c>'\"", "d/ctl\x01key", "d/tab\tkey", "d/ü"}
			for _, k := range append(slices.Clone(keys), "d/kept") {
				put(t, b, k, []byte(k), bucket.Attrs{})
			}
			if err := b.DeleteMany(ctx, append(keys, "d/missing")); err != nil {
				t.Fatal(err)
			}
			page, err := b.List(ctx, bucket.ListRequest{Prefix: "d/", MaxKeys: 100})
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, o := range page.Objects {
				left = append(left, o.Key)
			}
			if !slices.Equal(left, []string{"d/kept"}) {
				t.Errorf("left after DeleteMany: %q, want only d/kept", left)
			}
		})
	}
}
