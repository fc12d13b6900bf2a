# Sourced by the scripts that start `frozenlm serve --port 0` in the background (tests/serve_clients.sh,
# tests/serve_replicas.sh, scripts/serve_load_test.sh). serve_port LOG PID waits until the server (PID, writing its
# stderr to LOG) answers /health and prints its port; returns 1 with the log on stderr if the process exits or 30 s
# pass. Every step tolerates the moment before the server has created LOG or printed its address: a bare
# `sed ... LOG | head -1` under `set -eo pipefail` exits the caller when LOG does not exist yet, and a caller reading
# the port through a pipe the server also holds then waited forever (a CI run hung in serve_replicas).
serve_port() {
  local log=$1 pid=$2 port=""
  for _ in $(seq 1 300); do
    port=$(sed -n 's|.*on http://127.0.0.1:\([0-9]*\).*|\1|p' "$log" 2>/dev/null | head -1 || true)
    if [ -n "$port" ] && curl -sf --max-time 2 "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
      echo "$port"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "frozenlm serve (pid $pid) did not answer /health; its log ($log):" >&2
  cat "$log" >&2 2>/dev/null || true
  return 1
}
