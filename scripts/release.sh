#!/usr/bin/env bash
# Builds a release of the bridge into dist/ from the commit its tag names (issue 27; docs/OPERATIONS.md,
# "Releasing"). It creates no tag and uploads nothing: the maintainer tags, runs it, and uploads dist/.
#
#   scripts/release.sh v0.9.0
#
# dist/ then holds:
#   bridge-v0.9.0-<os>-<arch>             binaries without cgo (CGO_ENABLED=0, -trimpath; static on Linux) for linux/amd64,
#                                         linux/arm64, darwin/amd64 and darwin/arm64; `bridge version` prints v0.9.0
#                                         and the commit
#   bridge-v0.9.0-<os>-<arch>.cdx.json    each binary's SBOM, CycloneDX 1.6, from its embedded build information
#                                         (deploy/cmd/sbom: every module linked, its version and go.sum hash, the
#                                         standard library's version)
#   bridge-0.9.0.tgz                      the Helm chart, version and appVersion 0.9.0 (deploy/cmd/chart: Helm's
#                                         own packages, linted first)
#   bridge-image-0.9.0-linux-<arch>.tar.gz, nats-image-0.9.0-linux-<arch>.tar.gz
#                                         the FROM scratch images scripts/images.sh builds, tagged
#                                         evershield/bridge:0.9.0 and evershield/nats:0.9.0 (docker save), one per
#                                         architecture of IMAGE_ARCHES, to docker load and push (a multi-arch
#                                         manifest list needs a registry: docker manifest create after the pushes)
#   SHA256SUMS                            the SHA-256 of every file above
#
# Checks first: the version is vX.Y.Z; CHANGELOG.md has its section (## [X.Y.Z] - YYYY-MM-DD, Keep a
# Changelog); the work tree is clean and the tag vX.Y.Z names HEAD; the chart's appVersion is X.Y.Z (a test
# in deploy/ holds the chart's version and deploy/kubernetes's image tag equal to it); dist/ is empty.
#
#   DRY_RUN=1 scripts/release.sh v0.9.0   a rehearsal: any commit and work tree, and [Unreleased] stands in
#                                         for a missing CHANGELOG section; everything is built as above
#   PLATFORMS="linux/amd64"               other binaries than the four (GOOS/GOARCH pairs)
#   IMAGE_ARCHES="amd64"                  other image architectures than amd64 and arm64
#   IMAGES=0                              no images (a machine without a Docker engine)
#   DIST=DIR                              another output directory than dist/
set -euo pipefail
# The Go toolchain go.mod names, fetched from the module proxy by the go command (issue 27).
export GOTOOLCHAIN=go1.27.3
cd "$(dirname "$0")/.."

die() { echo "release: $*" >&2; exit 1; }

version=${1:-}
[[ $version =~ ^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$ ]] ||
  die "usage: scripts/release.sh vX.Y.Z (a semantic version tag; got '$version')"
semver=${version#v}
dry=${DRY_RUN:-0}
platforms=${PLATFORMS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64}
image_arches=${IMAGE_ARCHES:-amd64 arm64}
images=${IMAGES:-1}

if grep -qE "^## \[$semver\] - [0-9]{4}-[0-9]{2}-[0-9]{2}$" CHANGELOG.md; then
  :
elif [ "$dry" = 1 ] && grep -q '^## \[Unreleased\]' CHANGELOG.md; then
  echo "release: dry run: CHANGELOG.md has no section for $semver; [Unreleased] stands in"
else
  die "CHANGELOG.md has no section '## [$semver] - YYYY-MM-DD' (Keep a Changelog): move the Unreleased entries there"
fi

commit=$(git rev-parse HEAD)
if [ "$dry" != 1 ]; then
  [ -z "$(git status --porcelain)" ] || die "the work tree has changes: release from a clean checkout"
  tagged=$(git rev-parse -q --verify "refs/tags/$version^{commit}" || true)
  [ "$tagged" = "$commit" ] || die "tag $version does not name HEAD ($commit): tag the release commit first"
  grep -qx "appVersion: \"$semver\"" deploy/helm/bridge/Chart.yaml ||
    die "deploy/helm/bridge/Chart.yaml's appVersion is not \"$semver\": set it (and version, and render deploy/kubernetes/bridge.yaml again) before tagging"
fi

dist=${DIST:-dist}
mkdir -p "$dist"
dist=$(cd "$dist" && pwd)
[ -z "$(ls -A "$dist")" ] || die "$dist is not empty: remove what an earlier run left"

ldflags="-s -w -X main.version=$version -X main.commit=$commit"
for p in $platforms; do
  os=${p%/*} arch=${p#*/}
  echo "release: bridge $version for $os/$arch"
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -buildvcs=false -trimpath -ldflags "$ldflags" \
    -o "$dist/bridge-$version-$os-$arch" ./cmd/bridge
  (cd deploy && go run ./cmd/sbom -version "$version" "$dist/bridge-$version-$os-$arch") \
    >"$dist/bridge-$version-$os-$arch.cdx.json"
done

echo "release: the Helm chart $semver"
(cd deploy && go run -tags helm ./cmd/chart -version "$semver" -out "$dist" helm/bridge)

if [ "$images" = 1 ]; then
  # One image build: the script the compose cluster uses, with the release's tag and version.
  for arch in $image_arches; do
    TAG=$semver VERSION=$version ARCH=$arch scripts/images.sh
    for name in bridge nats; do
      docker save "evershield/$name:$semver" | gzip -n >"$dist/$name-image-$semver-linux-$arch.tar.gz"
    done
  done
fi

sums=$(mktemp)
if command -v sha256sum >/dev/null 2>&1; then
  (cd "$dist" && sha256sum -- *) >"$sums"
else
  (cd "$dist" && shasum -a 256 -- *) >"$sums"
fi
mv "$sums" "$dist/SHA256SUMS"
chmod 0644 "$dist/SHA256SUMS"
echo "release: $version in $dist:"
ls -l "$dist"
