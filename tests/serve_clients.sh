#!/usr/bin/env bash
# `frozenlm serve` as users reach it: the official OpenAI client (npm `openai`) and the web playground in a real
# headless Chromium (playwright-core driving Debian's chromium). Starts a server on a free port with the committed
# testbed base and its two soft prompts, compares its answers with `frozenlm generate` (chat too, through
# tests/data/qa_chat_template.jinja, which turns a user turn into the testbed's question format), and stops it with SIGTERM.
# Usage: tests/serve_clients.sh FROZENLM_BINARY OUT_DIR   (the screenshot goes to OUT_DIR/playground.png)
set -euo pipefail
F=$1; OUT=$2
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
M=testbed/model
KEY=test-key-$$
PROMPT=$'Question: What is the capital of Germany?\nAnswer:'
EXPECTED=$($F generate --model $M --module testbed/modules/closed_book --prompt "$PROMPT" --temperature 0 --max-new-tokens 12 --stop $'\n' --threads 1 2>/dev/null | tail -c +$((${#PROMPT} + 1)))
EXPECTED=${EXPECTED%%$'\n'*}  # the text up to the stop string, as the API returns it
$F serve --model $M --model-name testbed --modules-dir testbed/modules --port 0 --api-key "$KEY" --threads 1 \
   --chat-template tests/data/qa_chat_template.jinja 2> "$OUT/serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
source scripts/serve_port.sh
PORT=$(serve_port "$OUT/serve.log" $PID)
echo "server on port $PORT; generate says: $(printf %q "$EXPECTED")"
node tests/serve_openai_client.js "http://127.0.0.1:$PORT/v1" "$KEY" closed_book "$PROMPT" "$EXPECTED"
/usr/bin/python3 tests/lm_eval_client.py "http://127.0.0.1:$PORT" "$KEY" "$F" $M testbed/modules/closed_book closed_book
node tests/serve_playground.js "http://127.0.0.1:$PORT/" "$KEY" "$OUT/playground.png"
kill -TERM $PID
wait $PID
grep -q "SIGTERM: draining" "$OUT/serve.log" && grep -q "\[serve\] stopped" "$OUT/serve.log" && echo "ok SIGTERM drained and stopped the server"
# One structured log line per request.
L=$(grep -c '^{"method"\|^{.*"path":"/v1/completions"' "$OUT/serve.log" || true)
[ "$L" -ge 5 ] && echo "ok $L JSON log lines for completions"
