#!/usr/bin/env bash
# Runs each example operation against a running gateway (cargo xtask demo),
# first without a token, then with a development token for student 1.
# Usage: examples/graphql/run.sh [http://localhost:8080]
set -euo pipefail
cd "$(dirname "$0")"
gateway="${1:-http://localhost:8080}"
token=$(cargo run -q --manifest-path ../../Cargo.toml -- token --sub 1 --scope payments:read 2>/dev/null | tail -n 1)
suffix=$(date +%s)

# operation file, then its variables as JSON
operations=(
  "dashboard.graphql" '{"id": "1"}'
  "me.graphql" '{}'
  "register.graphql" "{\"input\": {\"username\": \"reader$suffix\", \"email\": \"reader$suffix@example.com\", \"fullName\": \"Example Reader\", \"grade\": 4, \"password\": \"a-long-password\"}}"
  "checkout.graphql" "{\"input\": {\"studentId\": 1, \"amount\": \"9.99\", \"currency\": \"USD\"}, \"key\": \"example-$suffix\"}"
  "start-reading-session.graphql" '{"lessonId": 3}'
)

run() {
  local file=$1 variables=$2; shift 2
  local body
  body=$(python3 -c 'import json,sys; print(json.dumps({"query": open(sys.argv[1]).read(), "variables": json.loads(sys.argv[2])}))' "$file" "$variables")
  curl -sS "$gateway/graphql" -H 'content-type: application/json' "$@" -d "$body"
  echo
}

for ((i = 0; i < ${#operations[@]}; i += 2)); do
  file=${operations[i]} variables=${operations[i+1]}
  echo "== $file, anonymous"
  run "$file" "$variables"
  echo "== $file, as student 1"
  run "$file" "$variables" -H "authorization: Bearer $token"
done
