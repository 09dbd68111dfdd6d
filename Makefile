# ossmount — see README.md.
GO ?= go
export GOFLAGS ?= -buildvcs=false

.PHONY: build run test deps vet bench clean

# The commit, for `ossmount --version` (none outside a git checkout).
REVISION := $(shell git describe --always --dirty 2>/dev/null)

build:
	$(GO) build -ldflags "-X main.revision=$(REVISION)" -o bin/ ./cmd/...

# The main job on the embedded default: local server + mount + demo copy.
run: build deps
	bash integration/run-demo.sh

# Every test: unit tests over the fake bucket, the bucket conformance suite
# against osslocal, and the integration tests through /dev/fuse.
test: deps vet
	$(GO) test -count=1 -timeout 9m ./...

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

# fuse3 (fusermount3), rsync, cmp, git, prlimit and sqlite3 for the tests; installed when missing and root.
deps:
	@missing=""; \
	command -v fusermount3 >/dev/null || missing="$$missing fuse3"; \
	command -v rsync >/dev/null || missing="$$missing rsync"; \
	command -v cmp >/dev/null || missing="$$missing diffutils"; \
	command -v git >/dev/null || missing="$$missing git"; \
	command -v prlimit >/dev/null || missing="$$missing util-linux"; \
	command -v sqlite3 >/dev/null || missing="$$missing sqlite3"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		else echo "missing:$$missing (install them, or run as root)"; exit 1; fi; \
	fi
	@test -e /dev/fuse || { echo "/dev/fuse is missing"; exit 1; }

clean:
	rm -rf bin mnt

# Throughput through the mount against the direct SDK, same server, same run.
bench: build deps
	$(GO) run ./integration/bench -bin bin
