#!/bin/sh
# Lints proto/ with buf and regenerates the TypeScript of the agent protocol into proto/gen/.
# With --verify, generates into a temporary directory instead and fails if proto/gen/ differs.
set -eu
cd "$(dirname "$0")/../proto"
buf=../node_modules/.bin/buf
"$buf" lint
if [ "${1:-}" = "--verify" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$buf" generate --output "$tmp"
  if ! diff -r "$tmp/gen" gen; then
    echo "proto/gen is stale: run npm run update-proto" >&2
    exit 1
  fi
  echo "proto/gen is current"
else
  rm -rf gen
  "$buf" generate
  echo "wrote proto/gen"
fi
