#!/usr/bin/env bash
# The hot read path bench (issue 15): one gateway (release build, SQLite, demo data,
# GATEWAY_LIMITS=off) pinned to CPU 0, wrk pinned to CPU 1, all scenarios in one run:
#
#   GET /healthz                 the baseline: the HTTP stack alone
#   { __typename }               a GraphQL request that reads no catalog data (answered from
#                                the response cache), and again with Cache-Control: no-store
#                                (parsed, checked and executed each time)
#   catalog page, uncached       20 products with variants and availability, from the read
#                                model (the response cache kept out with Cache-Control: no-store)
#   catalog page, cached         the same page from the response cache
#
# and prints requests/s, p50/p99 latency, each ratio to /healthz, and the gateway's RSS once
# the whole demo catalog has been read into memory.
#
#   cargo build --release -p gateway && bench/hot-read.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-10}
CONNECTIONS=${2:-32}
BIN=${GATEWAY_BIN:-target/release/gateway}
PORT=${PORT:-18080}
URL="http://127.0.0.1:$PORT"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
[ -x "$BIN" ] || { echo "$BIN is missing: cargo build --release -p gateway" >&2; exit 1; }

WORK=$(mktemp -d)
LOG="$WORK/gateway.log"
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# The safelisted operations are read from ./operations.
GATEWAY_LIMITS=off GATEWAY_JWT_SECRET="bench-only-secret-$(date +%s%N)-0123456789abcdef" \
  DATABASE_URL="sqlite://$WORK/bench.db?mode=rwc" RUST_LOG=warn \
  taskset -c 0 "$BIN" serve --demo --listen "127.0.0.1:$PORT" >"$LOG" 2>&1 &
PID=$!
for _ in $(seq 1 120); do
  curl -sf "$URL/readyz" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -sf "$URL/readyz" >/dev/null || { echo "the gateway did not start:" >&2; cat "$LOG" >&2; exit 1; }

PAGE='query CatalogPage($first: Int!, $after: String) { products(first: $first, after: $after) { edges { cursor node { id slug name category { name } variants { sku options { name value } availability { status quantity } } } } pageInfo { hasNextPage endCursor } } }'
body() { # query, variables JSON
  python3 -c 'import json,sys; print(json.dumps({"query": sys.argv[1], "variables": json.loads(sys.argv[2])}))' "$1" "$2"
}
PAGE_BODY=$(body "$PAGE" '{"first": 20}')
TYPENAME_BODY=$(body '{ __typename }' '{}')

# Read the whole catalog once (every page), so the read model holds all of it.
after=null
pages=0
while :; do
  reply=$(curl -sf -H 'content-type: application/json' -H 'cache-control: no-store' \
    --data "$(body "$PAGE" "{\"first\": 100, \"after\": $after}")" "$URL/graphql")
  pages=$((pages + 1))
  next=$(python3 -c 'import json,sys; p=json.loads(sys.argv[1])["data"]["products"]["pageInfo"]; print(json.dumps(p["endCursor"]) if p["hasNextPage"] else "")' "$reply")
  [ -z "$next" ] && break
  after=$next
done
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")

run() { # name, path, body, cache-control
  local out
  out=$(BODY="$3" CACHE_CONTROL="$4" taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_EACH}s" \
    --latency ${3:+-s bench/wrk/graphql.lua} "$URL$2")
  local rps p50 p99 failed
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  failed=$(awk '/^failed responses/ {print $3}' <<<"$out")
  failed=${failed:-0}
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  printf '%-32s %10s req/s   p50 %8s   p99 %8s   failed %s%s\n' "$1" "$rps" "$p50" "$p99" "$failed" \
    "${non2xx:+ (non-2xx $non2xx)}"
  echo "$rps" >"$WORK/$5"
}

echo "gateway pid $PID on CPU 0, wrk on CPU 1; ${SECONDS_EACH}s per scenario, $CONNECTIONS connections"
echo "RSS with the whole demo catalog read ($pages pages of 100): $((rss_kib / 1024)) MiB"
# Warm-up: the page once through the cache, connections open.
BODY="$PAGE_BODY" taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d2s -s bench/wrk/graphql.lua "$URL/graphql" >/dev/null
run "GET /healthz (baseline)" /healthz "" "" healthz
run "{ __typename }" /graphql "$TYPENAME_BODY" "" typename
run "{ __typename }, no-store" /graphql "$TYPENAME_BODY" "no-store" typename_executed
run "catalog page, uncached" /graphql "$PAGE_BODY" "no-store" uncached
run "catalog page, cached" /graphql "$PAGE_BODY" "" cached
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
echo "RSS after the run: $((rss_kib / 1024)) MiB"
base=$(cat "$WORK/healthz")
for scenario in typename typename_executed uncached cached; do
  awk -v s="$scenario" -v x="$(cat "$WORK/$scenario")" -v b="$base" \
    'BEGIN { printf "%-18s / healthz = %.4f\n", s, x / b }'
done
echo "targets: typename >= 0.40; uncached >= 0.02 with p99 < 30 ms; cached >= 0.25 with p99 < 5 ms"
