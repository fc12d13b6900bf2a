#!/usr/bin/env bash
# Scale-out: two `frozenlm serve` replicas (no shared state: both load the same module directory) behind HAProxy with
# /health as the check; one replica is killed (SIGKILL) in the middle of 300 requests from 8 clients. Requests that
# were not in flight at that moment must all succeed (HAProxy retries refused connections on the other replica and
# takes the dead one out after its health check fails). Usage: tests/serve_replicas.sh FROZENLM_BINARY OUT_DIR
set -euo pipefail
F=$1; OUT=$2
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
M=testbed/model
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
source scripts/serve_port.sh
start() {  # LOG -> "PID PORT"; the server's stdout is not the caller's pipe (it would hold it open: a failed start
           # would then hang the caller's `read` instead of failing it)
  $F serve --model $M --modules-dir testbed/modules --port 0 --threads 1 --quiet > /dev/null 2> "$1" &
  local pid=$! port
  port=$(serve_port "$1" $pid) || { kill $pid 2>/dev/null; exit 1; }
  echo "$pid $port"
}
read -r P1 PORT1 < <(start "$OUT/replica1.log")
read -r P2 PORT2 < <(start "$OUT/replica2.log")
LB=$(free_port)
cat > "$OUT/haproxy.cfg" <<CFG
global
  maxconn 512
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  retries 3
  option redispatch
  retry-on conn-failure empty-response response-timeout
frontend api
  bind 127.0.0.1:$LB
  default_backend replicas
backend replicas
  balance leastconn
  option httpchk GET /health
  http-check expect status 200
  server r1 127.0.0.1:$PORT1 check inter 200ms fall 1 rise 2
  server r2 127.0.0.1:$PORT2 check inter 200ms fall 1 rise 2
CFG
haproxy -f "$OUT/haproxy.cfg" -db > "$OUT/haproxy.log" 2>&1 &
HP=$!
trap 'kill $P1 $P2 $HP 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$LB/health" >/dev/null 2>&1 && break; sleep 0.1; done
echo "replicas on $PORT1 (pid $P1) and $PORT2, HAProxy on $LB"
node tests/serve_replicas.js "http://127.0.0.1:$LB" 300 8 100 "$P1" closed_book reader
