#!/usr/bin/env bash
# The committed testbed base (testbed/model, issue 5) or its 2x sibling (testbed/model-2x, issue 10): its files match
# SHA256SUMS, the weights are bf16 and at most MAX_BYTES (25 MB: the base's budget), it loads, and greedy decoding recalls facts of SEEN entities (golden continuations of cloze probes) while a
# HELD-OUT entity's fact, never in pretraining, is not produced; and (v2) it reads an answer out of a passage about an
# entity it never saw, and follows a counterfactual passage against its memory.
#   tests/testbed_model_checks.sh FROZENLM MODEL_DIR [MAX_BYTES=25000000]
set -euo pipefail
F=$1; M=$2; MAX=${3:-25000000}
(cd "$M" && sha256sum --quiet -c SHA256SUMS)
size=$(stat -c %s "$M/model.safetensors")
[ "$size" -le "$MAX" ] || { echo "model.safetensors is $size bytes (> $MAX)"; exit 1; }
/usr/bin/python3 - "$M/model.safetensors" <<'PY'
import json, struct, sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n))
dtypes = {v["dtype"] for k, v in h.items() if k != "__metadata__"}
assert dtypes == {"BF16"}, dtypes
print("model.safetensors:", len(h) - 1, "tensors, all BF16")
PY
"$F" info --model "$M" --json | /usr/bin/python3 -c 'import json,sys; j=json.load(sys.stdin); assert j["parameters"]>1e6, j; print("loads:", j["parameters"], "parameters")'
continuation() { "$F" generate --model "$M" --prompt "$1" --temperature 0 --max-new-tokens 8 2>/dev/null | head -1 | cut -c$((${#1} + 1))-; }
fail=0
while IFS='|' read -r prompt want; do
  got=$(continuation "$prompt")
  case "$got" in " $want" | " $want"[!A-Za-z0-9]*) echo "ok    '$prompt' ->$got" ;; *) echo "FAIL  '$prompt' ->$got (want ' $want')"; fail=1 ;; esac
done <<'GOLDEN'
The capital of Japan is|Tokyo
The currency of Japan is the|yen
The main language of Brazil is|Portuguese
France is a country in|Europe
Iron is a chemical element with the symbol|Fe
The element Oxygen has atomic number|8
A horse is a kind of|equine
GOLDEN
while IFS='|' read -r prompt never; do
  got=$(continuation "$prompt")
  case "$got" in " $never" | " $never"[!A-Za-z0-9]*) echo "FAIL  held out '$prompt' ->$got (was never in pretraining)"; fail=1 ;; *) echo "ok    held out '$prompt' ->$got" ;; esac
done <<'HELDOUT'
The capital of Algeria is|Algiers
The capital of Bulgaria is|Sofia
Caesium is a chemical element with the symbol|Cs
The currency of Burma is the|kyat
HELDOUT
# Reading (v2 base): a passage about an entity that exists nowhere in pretraining (names checked absent from
# corpus/pretrain_v2.jsonl), the answer must be copied from it; and a counterfactual passage must beat memory.
answer() { "$F" generate --model "$M" --prompt "$1" --temperature 0 --max-new-tokens 8 --stop $'\n' 2>/dev/null | tail -c +$((${#1} + 1)) | head -1; }
while IFS='|' read -r ctx q want; do
  prompt=$(printf 'Context: %s\nQuestion: %s\nAnswer:' "$ctx" "$q")
  got=$(answer "$prompt")
  case "$got" in " $want" | " $want"[!A-Za-z0-9]*) echo "ok    reading '$q' ->$got" ;; *) echo "FAIL  reading '$q' ->$got (want ' $want')"; fail=1 ;; esac
done <<'READING'
The capital of Zorvatha is Quimbrel. The government of Zorvatha is a federal republic.|Name the capital of Zorvatha.|Quimbrel
Most people in Draskelmor speak Voushen. About 2,310,000 people live in Draskelmor.|Name the main language of Draskelmor.|Voushen
The capital of Japan is Staithrun. The government of Japan is a parliamentary constitutional monarchy.|Name the capital of Japan.|Staithrun
READING
[ $fail = 0 ] && echo "testbed model checks passed"
