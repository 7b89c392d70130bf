#!/usr/bin/env bash
# Builds the images docker-compose.yml runs, from this repository and the Go module proxy alone, and the
# .env of their NATS passwords when there is none:
#   evershield/bridge:$TAG   the bridge: every role, the operator commands, the simulator
#   evershield/nats:$TAG     nats-server at the version in go.mod, for the compose cluster
#   evershield/lb:$TAG       the compose file's webhook load balancer (deploy/cmd/lb)
# The binaries are compiled here (static: CGO_ENABLED=0) and copied into FROM scratch images
# (deploy/docker/Dockerfile.*), so nothing is pulled and Docker's legacy builder suffices.
#
#   scripts/images.sh                 evershield/bridge:local and evershield/nats:local
#   TAG=0.9.0 scripts/images.sh       another tag (deploy/kubernetes and the Helm chart pin the chart's appVersion)
#   BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot scripts/images.sh
#                                     a stock base instead of scratch (it must be pulled)
#   VERSION=1.4.0                     what bridge version prints (default: git describe)
#   ARCH=arm64                        images for another architecture (GOARCH; default the Docker engine's):
#                                     the binaries are cross-compiled, the images say linux/$ARCH
#
# Without Go on this machine, the binaries are compiled in a golang image (GO_IMAGE, default
# golang:<go.mod's version>), which must be pulled. The images are for the Docker engine's architecture, or ARCH's.
set -euo pipefail
# The Go toolchain go.mod names, fetched from the module proxy by the go command (issue 27).
export GOTOOLCHAIN=go1.27.3
cd "$(dirname "$0")/.."

tag=${TAG:-local}
version=${VERSION:-$(git describe --always --dirty 2>/dev/null || echo devel)}
base=${BASE_IMAGE:-scratch}
# The legacy builder is all some engines have; BuildKit builds these files the same.
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}
arch=${ARCH:-$(docker version --format '{{.Server.Arch}}')}

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/data"
chmod 1777 "$ctx/rootfs/tmp"
chmod 0755 "$ctx" "$ctx/rootfs" "$ctx/rootfs/etc" "$ctx/data"
# The users distroless has: the images run as nonroot, 65532.
cat >"$ctx/rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$ctx/rootfs/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
chmod 0644 "$ctx/rootfs/etc/passwd" "$ctx/rootfs/etc/group"

# gobuild DIR OUT ARGS... compiles a static linux binary of the module in DIR into the context.
if command -v go >/dev/null 2>&1; then
  gobuild() {
    local dir=$1 out=$2; shift 2
    CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -C "$dir" -buildvcs=false -trimpath -o "$ctx/$out" "$@"
  }
else
  goimage=${GO_IMAGE:-golang:$(sed -nE 's/^go ([0-9]+\.[0-9]+).*/\1/p' go.mod)}
  echo "go not found: compiling in $goimage"
  gobuild() {
    local dir=$1 out=$2; shift 2
    docker run --rm -u "$(id -u):$(id -g)" -v "$PWD:/src:ro" -v "$ctx:/out" -w /src \
      -e HOME=/tmp -e CGO_ENABLED=0 -e GOOS=linux -e GOARCH="$arch" -e GOTOOLCHAIN="$GOTOOLCHAIN" \
      "$goimage" go build -C "$dir" -buildvcs=false -trimpath -o "/out/$out" "$@"
  }
fi

echo "compiling bridge $version, nats-server and lb (linux/$arch)"
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
gobuild . bridge -ldflags "-s -w -X main.version=$version -X main.commit=$commit" ./cmd/bridge
gobuild . nats-server -ldflags "-s -w" github.com/nats-io/nats-server/v2
gobuild deploy lb -ldflags "-s -w" ./cmd/lb

# build NAME: deploy/docker/Dockerfile.NAME, FROM $base, tagged evershield/NAME:$tag.
build() {
  sed "s|^FROM scratch\$|FROM $base|" "deploy/docker/Dockerfile.$1" >"$ctx/Dockerfile"
  # --no-cache: the legacy builder would take a layer cached for another platform (the same COPY of the
  # same files) and then refuse it ("does not match the specified platform"); these builds are copies alone.
  docker build -q --no-cache --platform "linux/$arch" -f "$ctx/Dockerfile" -t "evershield/$1:$tag" \
    --label org.opencontainers.image.version="$version" "$ctx"
  echo "built evershield/$1:$tag"
}
build bridge
build nats
build lb

# docker-compose.yml's NATS users take their passwords from .env: random ones, made once, never in an image.
if [ ! -e .env ]; then
  rand() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }
  umask 077
  {
    echo "# The compose cluster's NATS passwords (deploy/docker/nats-users.conf), made by scripts/images.sh."
    echo "NATS_BRIDGE_PASSWORD=$(rand)"
    echo "NATS_OPS_PASSWORD=$(rand)"
    echo "NATS_DOWNSTREAM_PASSWORD=$(rand)"
  } >.env
  echo "wrote .env: the compose cluster's NATS passwords"
fi
