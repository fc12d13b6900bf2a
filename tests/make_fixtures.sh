#!/usr/bin/env bash
# CTest fixture setup: independent references written into OUT (build/tests/fixtures) before the C++ tests run.
#   PyTorch reference (/usr/bin/python3, Debian python3-torch): random-init tiny Llama/GPT-2 checkpoints + logits,
#   greedy tokens of both real models, llama2.c tokenizer ids. Hugging Face tokenizers (Node): tokenizer cases.
set -euo pipefail
OUT=$1; SHARED=$2
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
REF="$HERE/reference/reference.py"
mkdir -p "$OUT"
$PY "$REF" fixture --arch llama --out "$OUT/tiny-llama" --seed 1
$PY "$REF" fixture --arch gpt2 --out "$OUT/tiny-gpt2" --seed 2
$PY "$REF" squad-metrics > "$OUT/squad_metric_cases.json"
$PY "$REF" greedy --model "$SHARED/models/tinystories-656k" --n 60 > "$OUT/greedy_tinystories.json"
$PY "$REF" greedy --model "$SHARED/models/stories260k/stories260K.bin" --n 60 > "$OUT/greedy_stories260k.json"
{
  echo "["
  first=1
  for t in "Once upon a time, there was a little girl named Lily." "Hello world" "  two  spaces " "Ünïcödé café 中文 😀" "x"; do
    [ $first -eq 1 ] || echo ","
    first=0
    printf '{"text": %s, "ids": %s}' "$($PY -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$t")" \
      "$($PY "$REF" llama2c-encode --tokenizer "$SHARED/models/stories260k/tok512.bin" --text "$t")"
  done
  echo "]"
} > "$OUT/llama2c_tokenizer_cases.json"
# The tokenizer reference needs npm's `tokenizers` (scripts/setup.sh installs it). Without it only the tokenizer
# tests fail (their reference file is missing); every other test still runs.
if ! node "$HERE/reference/tokenizer_reference.js" "$OUT" "$SHARED"; then
  echo "WARNING: Hugging Face tokenizers reference unavailable (run scripts/setup.sh): tokenizer tests will fail" >&2
fi
echo "fixtures written to $OUT"
