#!/usr/bin/env bash
# make run: start osslocal on a temporary directory, mount its bucket at
# ./mnt, copy a small demo tree in, and list the bucket's objects.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/bin
work=$(mktemp -d /tmp/ossmount-demo.XXXXXX)
mnt=$PWD/mnt
port=${OSSLOCAL_PORT:-19000}
export OSS_ACCESS_KEY_ID=demo-key OSS_ACCESS_KEY_SECRET=demo-secret
mkdir -p "$mnt"

"$bin/osslocal" --addr "127.0.0.1:$port" --root "$work/bucket-data" --bucket demo \
	--access-key-id "$OSS_ACCESS_KEY_ID" --access-key-secret "$OSS_ACCESS_KEY_SECRET" 2>"$work/osslocal.log" &
server=$!
cleanup() {
	mountpoint -q "$mnt" && umount "$mnt" 2>/dev/null || fusermount3 -u "$mnt" 2>/dev/null || true
	kill "$server" 2>/dev/null || true
	wait "$server" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
	sleep 0.05
done

echo "== mounting bucket demo at ./mnt (osslocal on 127.0.0.1:$port)"
"$bin/ossmount" demo "$mnt" -o "endpoint=http://127.0.0.1:$port,path_style,region=local,cache_dir=$work/cache,log_file=$work/ossmount.log,debug"

echo "== copying a demo tree into ./mnt"
demo="$work/demo-src"
mkdir -p "$demo/docs" "$demo/data/raw"
cp README.md "$demo/docs/"
cp go.mod "$demo/"
head -c 3M /dev/urandom >"$demo/data/raw/random-3MiB.bin"
seq 1 100000 >"$demo/data/numbers.txt"
echo "hello, object storage" >"$demo/hello.txt"
cp -r "$demo/." "$mnt/"
ls -lR "$mnt"

echo "== objects in bucket demo"
"$bin/osslocal" ls --endpoint "http://127.0.0.1:$port" --bucket demo

echo "== uploads logged by ossmount"
grep -c 'msg=uploaded' "$work/ossmount.log" | sed 's/$/ uploads/'
