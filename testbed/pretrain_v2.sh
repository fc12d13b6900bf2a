#!/usr/bin/env bash
# Pretrains a testbed v2 base (issue 10) from scratch, in one command:
#   testbed/pretrain_v2.sh [CONFIG=testbed/config.json] [MODEL_DIR=testbed/model] [EPOCHS=1]
# 1. builds the corpora and tasks (testbed/build/, incl. corpus/pretrain_v2.jsonl: the v2 mixture, docs/TESTBED.md),
# 2. trains a byte-level BPE of 4,096 tokens on the mixture's first 40,000 documents (one tokenizer for every size,
#    so task token budgets are the same), 3. pretrains CONFIG from N(0, 0.02) on the whole mixture, documents packed
#    whole into 256-token windows, 16 windows a step, EPOCHS passes, cosine schedule; resumable (rerun to continue),
# 4. saves bf16 safetensors + tokenizer into MODEL_DIR with SHA256SUMS, the curve beside it.
# The run (testbed/build/pretrain_v2_<config>/) keeps a snapshot every SNAPSHOT_EVERY=250 steps: probe the skills
# along the way with testbed/probe_snapshots.sh RUN (docs/TESTBED.md "Skills during pretraining"). THREADS=N sets
# the training threads (default: all cores).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
F=${FROZENLM:-$ROOT/build/frozenlm}
CONFIG=$(cd "$(dirname "${1:-$HERE/config.json}")" && pwd)/$(basename "${1:-$HERE/config.json}")
MODEL=${2:-$HERE/model}
EPOCHS=${3:-1}
B=$HERE/build
bash "$HERE/build.sh" "$B" 0 >/dev/null
head -n 40000 "$B/corpus/pretrain_v2.jsonl" > "$B/corpus/bpe_sample_v2.jsonl"
/usr/bin/python3 "$HERE/train_bpe.py" --corpus "$B/corpus/bpe_sample_v2.jsonl" --vocab 4096 --out "$B/tokenizer_v2.json"
cat > "$B/pretrain_v2_task.json" <<JSON
{"name": "testbed_pretrain_v2", "type": "lm", "data": {"train": "corpus/pretrain_v2.jsonl"}, "text": "{text}", "max_tokens": 256, "pack": true}
JSON
RUN=$B/pretrain_v2_$(basename "$CONFIG" .json)
BATCH=16
common=(--init random --config "$CONFIG" --tokenizer "$B/tokenizer_v2.json" --task "$B/pretrain_v2_task.json" --batch-size $BATCH
        --lr 2e-3 --warmup 100 --schedule cosine --weight-decay 0.1 --dev-split "" --seed 0 --save-dtype bf16)
# The number of packed windows sets the step count (EPOCHS passes over the mixture): a one-step dry run reports it.
windows=$("$F" train finetune "${common[@]}" --out "$B/pretrain_v2_count" --steps 1 --threads 1 2>&1 | sed -n 's/.* packed into \([0-9]*\) windows.*/\1/p')
rm -rf "$B/pretrain_v2_count"
[ -n "$windows" ] || { echo "could not count the packed windows" >&2; exit 1; }
STEPS=$(( (windows * EPOCHS + BATCH - 1) / BATCH ))
echo "pretrain_v2: $windows windows of 256 tokens, $EPOCHS epoch(s): $STEPS steps of $BATCH windows"
"$F" train finetune "${common[@]}" --out "$RUN" --steps "$STEPS" --eval-every 0 --checkpoint-every 100 --resume-or-start \
    --snapshot-every "${SNAPSHOT_EVERY:-250}" ${THREADS:+--threads "$THREADS"}
mkdir -p "$MODEL"
for f in config.json generation_config.json model.safetensors; do cp "$RUN/$f" "$MODEL/$f"; done
cp "$B/tokenizer_v2.json" "$MODEL/tokenizer.json"
[ -f "$RUN/frozenlm.json" ] && cp "$RUN/frozenlm.json" "$MODEL/frozenlm.json"
cp "$RUN/curve.svg" "$MODEL/pretrain_curve.svg"
(cd "$MODEL" && sha256sum model.safetensors tokenizer.json config.json > SHA256SUMS)
cat "$MODEL/SHA256SUMS"
