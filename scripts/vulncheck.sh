#!/usr/bin/env bash
# The vulnerability scan, offline (issue 27): govulncheck over the bridge's module, against a Go
# vulnerability database built from the golang.org/x/vulndb module at a pinned version. It needs only the
# Go module proxy (or a module cache that already holds both modules), never vuln.go.dev.
#
#   scripts/vulncheck.sh                       scan ./... of the bridge's module
#   scripts/vulncheck.sh -show verbose ./...   other govulncheck arguments instead of ./...
#   VULNDB_VERSION=v0.0.0-... scripts/vulncheck.sh
#                                              another snapshot of the database (go list -m -versions
#                                              golang.org/x/vulndb lists none: take a pseudo-version)
#   VULNDB_DIR=DIR scripts/vulncheck.sh        keep the built database in DIR (else a temporary directory)
#
# govulncheck is golang.org/x/vuln's, at the version of deploy/go.mod's tool line; the database is made by
# deploy/cmd/vulndb. Exit status: govulncheck's, 3 when a vulnerable symbol is reachable from the code,
# 0 when none is (a vulnerable module that is required but not called is listed, and does not fail).
set -euo pipefail
# The Go toolchain go.mod names, fetched from the module proxy by the go command (issue 27). govulncheck
# takes the standard library's version from it.
export GOTOOLCHAIN=go1.27.3
cd "$(dirname "$0")/.."
root=$PWD

vulndb=${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
db=${VULNDB_DIR:-$tmp/db}

# Outside any module, so that neither go.mod nor go.sum changes; the checksum is the Go checksum database's.
dir=$(cd "$tmp" && go mod download -json "golang.org/x/vulndb@$vulndb" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
modified=$(cd "$tmp" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z07:00"}}' "golang.org/x/vulndb@$vulndb")
if [ -z "$dir" ] || [ ! -d "$dir/data/osv" ]; then
  echo "vulncheck: golang.org/x/vulndb@$vulndb has no data/osv (downloaded to '$dir')" >&2
  exit 1
fi

cd deploy
go run ./cmd/vulndb -osv "$dir/data/osv" -modified "$modified" -out "$db"
status=0
go tool govulncheck -C "$root" -db "file://$db" "${@:-./...}" || status=$?
exit "$status"
