#!/usr/bin/env bash
# Retrains the knowledge testbed's v1 base (issue 5; superseded by testbed/pretrain_v2.sh) from scratch:
#   testbed/pretrain.sh [STEPS=6000] [MODEL_DIR=testbed/build/model-v1]   (≈ 65 min on 2 cores; docs/TESTBED.md, "v1 base")
# 1. builds the corpora and task suite (testbed/build/), 2. trains a byte-level BPE of 4,096 tokens on the
# pretraining corpus, 3. pretrains testbed/config.json (Llama, 8 layers, d=256, 7.0M parameters) from random
# initialisation on the SEEN entities' passages with `frozenlm train finetune --init random`, 4. saves it as bf16
# safetensors in testbed/model/ (a Hugging Face directory) with its sha256.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
F=${FROZENLM:-$ROOT/build/frozenlm}
STEPS=${1:-6000}
MODEL=${2:-$HERE/build/model-v1}
B=$HERE/build
bash "$HERE/build.sh" "$B" 0
/usr/bin/python3 "$HERE/train_bpe.py" --corpus "$B/corpus/pretrain.jsonl" --vocab 4096 --out "$B/tokenizer.json"
cat > "$B/pretrain_task.json" <<JSON
{"name": "testbed_pretrain", "type": "lm", "data": {"train": "corpus/pretrain.jsonl"}, "text": "{text}", "max_tokens": 256}
JSON
RUN=$B/pretrain_run
"$F" train finetune --init random --config "$HERE/config.json" --tokenizer "$B/tokenizer.json" --task "$B/pretrain_task.json" \
    --out "$RUN" --steps "$STEPS" --batch-size 32 --lr 2e-3 --warmup 200 --schedule cosine --weight-decay 0.1 \
    --dev-split "" --eval-every 500 --checkpoint-every 500 --seed 0 --save-dtype bf16 $([ -d "$RUN/checkpoint" ] && echo --resume)
mkdir -p "$MODEL"
for f in config.json generation_config.json model.safetensors tokenizer.json frozenlm.json; do cp "$RUN/$f" "$MODEL/$f"; done
cp "$RUN/curve.svg" "$MODEL/pretrain_curve.svg"
(cd "$MODEL" && sha256sum model.safetensors tokenizer.json config.json > SHA256SUMS)
cat "$MODEL/SHA256SUMS"
