#!/bin/sh
# The API's types (src/generated/openapi.ts) are generated from the OpenAPI schema, never edited.
#   npm run types [-- SCHEMA]          regenerate them (SCHEMA: a schema file, YAML or JSON;
#                                      default: the schema the Django code here describes now)
#   npm run types:check [-- SCHEMA]    fail if the checked-in file is not what SCHEMA gives (CI)
set -eu
check=no
if [ "${1:-}" = "--check" ]; then check=yes; shift; fi
schema=${1:-}
from=${schema:-"the schema of the Django code here"}
case "$schema" in ""|/*) ;; *) schema="$PWD/$schema" ;; esac
cd "$(dirname "$0")"
out=src/generated/openapi.ts
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "$schema" ]; then
    schema="$tmp/openapi.yaml"
    (cd .. && STEERING_LOCAL_SECRET_KEY="${STEERING_LOCAL_SECRET_KEY-1}" "${PYTHON:-.venv/bin/python}" \
        manage.py spectacular --file "$schema" --format openapi)
fi
node_modules/.bin/openapi-typescript "$schema" --output "$tmp/openapi.ts" >/dev/null
if [ "$check" = no ]; then
    mkdir -p "$(dirname "$out")"
    cp "$tmp/openapi.ts" "$out"
    echo "$out regenerated from $from"
elif ! diff -u "$out" "$tmp/openapi.ts"; then
    echo "frontend/$out is not what the API's schema gives: run \`cd frontend && npm run types\` and commit it." >&2
    exit 1
fi
