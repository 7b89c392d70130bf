#!/usr/bin/env bash
# Runs Docker Compose with these arguments, whichever tool this machine has: the docker compose plugin
# (v2) when `docker compose version` answers, else docker-compose (1.29, the Python one). COMPOSE chooses
# one, e.g. COMPOSE=docker-compose. docker-compose.yml reads the same with both. The cluster suite
# (test/cluster) runs every compose command through this script.
#
#   scripts/compose.sh up -d
#   scripts/compose.sh -p trial ps
#   COMPOSE="docker compose" scripts/compose.sh down -v
set -euo pipefail
# The Go toolchain go.mod names (every script exports it; this one runs no Go).
export GOTOOLCHAIN=go1.27.3

if [ -n "${COMPOSE:-}" ]; then
  read -r -a tool <<<"$COMPOSE"
elif docker compose version >/dev/null 2>&1; then
  tool=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  tool=(docker-compose)
else
  echo "compose.sh: neither docker compose (v2) nor docker-compose is installed" >&2
  exit 127
fi
exec "${tool[@]}" "$@"
