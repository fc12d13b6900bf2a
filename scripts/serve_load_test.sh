#!/usr/bin/env bash
# Reliability under load, on loopback: starts `frozenlm serve` (the committed testbed base and its two soft prompts),
# warms it up, records its idle memory, sends N requests (default 10,000) from C concurrent clients (default 64) over
# the base and both modules — completions, chat and embeddings, streamed and not, some cancelled or abandoned, some with
# a temperature of 1e-40 (scripts/serve_load_test.js) — then checks: zero 5xx, the
# server still alive, nothing left running or queued (/metrics), and its memory back to the idle level (RSS within
# 10% or 64 MiB of the warm idle RSS). Usage: scripts/serve_load_test.sh [N] [C] [TIME_LIMIT_S]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}; C=${2:-64}; LIMIT=${3:-900}
F=./build/frozenlm
[ -x $F ] || scripts/setup.sh build >/dev/null
LOG=$(mktemp)
$F serve --model testbed/model --model-name testbed --modules-dir testbed/modules --chat-template tests/data/qa_chat_template.jinja \
   --port 0 --quiet 2> "$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -f "$LOG"' EXIT
source scripts/serve_port.sh
PORT=$(serve_port "$LOG" $PID)
URL=http://127.0.0.1:$PORT
rss() { awk '/VmRSS/ {print $2}' /proc/$PID/status; }
node scripts/serve_load_test.js $URL 640 64 testbed,closed_book,reader 120 >/dev/null   # warm-up: allocator caches, code paths
sleep 3  # the engine gives its KV buffers back after 1 s idle
IDLE=$(rss)
echo "server pid $PID on $URL; warm idle RSS $((IDLE / 1024)) MiB"
node scripts/serve_load_test.js $URL "$N" "$C" testbed,closed_book,reader "$LIMIT"
sleep 3
AFTER=$(rss)
STATE=$(curl -s $URL/metrics | grep '^frozenlm_engine{' | tr '\n' ' ')
echo "after: RSS $((AFTER / 1024)) MiB (idle $((IDLE / 1024)) MiB); engine: $STATE"
kill -0 $PID || { echo "FAILED: the server died"; exit 1; }
echo "$STATE" | grep -q 'state="running_rows"} 0 ' && echo "$STATE" | grep -q 'state="queued"} 0 ' || { echo "FAILED: requests left running"; exit 1; }
[ $((AFTER - IDLE)) -le $((IDLE / 10 > 65536 ? IDLE / 10 : 65536)) ] || { echo "FAILED: memory did not come back to idle"; exit 1; }
echo "ok load test passed"
