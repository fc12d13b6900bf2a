#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for RUNS executions (default 1,000,000).
# Usage: fuzz/run.sh [RUNS] [extra libFuzzer flags]. Needs clang + libclang-rt-14-dev (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-1000000}
shift || true
OUT=build-fuzz
mkdir -p "$OUT"
FLAGS="-std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Isrc"
clang++ $FLAGS fuzz/fuzz_safetensors_header.cpp src/core/safetensors_header.cpp -o "$OUT/fuzz_safetensors_header"
clang++ $FLAGS fuzz/fuzz_tokenizer_json.cpp src/tokenizer/hf_tokenizer.cpp src/tokenizer/unicode.cpp -o "$OUT/fuzz_tokenizer_json"
# Safetensors seeds are written here (not tracked): a valid two-tensor file and one with overlapping byte ranges.
mkdir -p "$OUT/seeds-safetensors"
/usr/bin/python3 - "$OUT/seeds-safetensors" <<'PY'
import json, struct, sys
def st(h, data=b''):
    b = json.dumps(h).encode(); return struct.pack('<Q', len(b)) + b + data
d = sys.argv[1]
open(d + '/valid.safetensors', 'wb').write(st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    "b": {"dtype": "BF16", "shape": [1, 2], "data_offsets": [8, 12]}, "__metadata__": {"format": "pt"}}, b'\0' * 12))
open(d + '/overlap.safetensors', 'wb').write(st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b'\0' * 8))
PY
for t in safetensors_header:$OUT/seeds-safetensors tokenizer_json:fuzz/seeds/tokenizer; do
  target=${t%%:*}; seeds=${t##*:}
  corpus="$OUT/corpus-$target"
  mkdir -p "$corpus"
  echo "== fuzz_$target: $RUNS runs"
  "$OUT/fuzz_$target" -runs="$RUNS" -max_len=4096 -timeout=10 -print_final_stats=1 "$@" "$corpus" "$seeds" 2>&1 \
    | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|Done|==.*ERROR|SUMMARY)" || true
  test "${PIPESTATUS[0]}" -eq 0
done
