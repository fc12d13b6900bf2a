#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for RUNS executions (default 1,000,000).
# Usage: fuzz/run.sh [RUNS] [extra libFuzzer flags]
#   FUZZ_TARGETS="a b" limits the targets; FUZZ_JOBS=N runs N targets at once (default 1); FUZZ_OUT (default
#   build-fuzz) holds binaries, seeds, corpora and one log per target (fuzz_<target>.log, with libFuzzer's final stats).
#   FUZZ_OPT (default "-O1 -g") sets the optimisation flags (CTest's smoke run builds with -O0 to build faster).
# Needs clang + libclang-rt-14-dev (scripts/setup.sh installs them). Exit status: non-zero if any target found a crash.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-1000000}
shift || true
OUT=${FUZZ_OUT:-build-fuzz}
JOBS=${FUZZ_JOBS:-1}
ALL="safetensors_header tokenizer_json task_json adapter_config trainer_state llama2c_header jsonl_records completion_request gguf chat_request chat_template"
TARGETS=${FUZZ_TARGETS:-$ALL}
mkdir -p "$OUT"
FLAGS="-std=c++17 ${FUZZ_OPT:--O1 -g} -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Isrc"
sources() {
  case $1 in
    safetensors_header) echo src/core/safetensors_header.cpp ;;
    tokenizer_json) echo src/tokenizer/hf_tokenizer.cpp src/tokenizer/unicode.cpp ;;
    task_json) echo src/tasks/task.cpp src/data/records.cpp ;;
    adapter_config) echo src/modules/peft_config.cpp ;;
    trainer_state) echo src/train/trainer_state.cpp ;;
    llama2c_header) echo src/core/llama2c_header.cpp ;;
    jsonl_records) echo src/data/records.cpp ;;
    completion_request|chat_request) echo src/serve/openai_api.cpp ;;
    chat_template) echo src/chat/jinja.cpp src/tokenizer/unicode.cpp ;;
    gguf) echo src/core/gguf_file.cpp src/core/atomic_file.cpp src/tokenizer/gguf_vocab.cpp src/tokenizer/hf_tokenizer.cpp \
               src/tokenizer/llama2c_tokenizer.cpp src/tokenizer/tokenizer.cpp src/tokenizer/unicode.cpp ;;
    *) echo "unknown fuzz target $1" >&2; exit 2 ;;
  esac
}
for t in $TARGETS; do
  [ "$OUT/fuzz_$t" -nt "fuzz/fuzz_$t.cpp" ] && [ -z "$(find src -newer "$OUT/fuzz_$t" -name '*.cpp' -o -newer "$OUT/fuzz_$t" -name '*.h' | head -1)" ] && continue
  echo "== building fuzz_$t"
  # shellcheck disable=SC2046
  clang++ $FLAGS "fuzz/fuzz_$t.cpp" $(sources "$t") -o "$OUT/fuzz_$t"
done

# Seeds are written here (not tracked), from the repository's own files where it has them.
S="$OUT/seeds"
rm -rf "$S"; mkdir -p "$S"/{safetensors_header,task_json,adapter_config,trainer_state,llama2c_header,jsonl_records,completion_request,gguf,chat_request,chat_template}
cp ../shared/data/chat-templates/templates/*.jinja tests/data/qa_chat_template.jinja "$S/chat_template/" 2>/dev/null || true
cp tasks/*.json tests/data/stories_lm.json "$S/task_json/"
/usr/bin/python3 - "$S" "$(cd .. && pwd)/shared/models/stories260k/stories260K.bin" <<'PY'
import json, struct, sys, os
d, l2c = sys.argv[1], sys.argv[2]
def st(h, data=b''):
    b = json.dumps(h).encode(); return struct.pack('<Q', len(b)) + b + data
open(d + '/safetensors_header/valid.safetensors', 'wb').write(st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    "b": {"dtype": "BF16", "shape": [1, 2], "data_offsets": [8, 12]}, "__metadata__": {"format": "pt"}}, b'\0' * 12))
open(d + '/safetensors_header/overlap.safetensors', 'wb').write(st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b'\0' * 8))
ours = {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 20, "token_dim": 128,
        "num_transformer_submodules": 1, "base_model_name_or_path": "m", "prompt_tuning_init": "TEXT",
        "prompt_tuning_init_text": "Classify", "tokenizer_name_or_path": "m", "inference_mode": True, "revision": None}
open(d + '/adapter_config/ours.json', 'w').write(json.dumps(ours, indent=2))
open(d + '/adapter_config/minimal.json', 'w').write('{"peft_type": "PROMPT_TUNING"}')
state = {"step": 8, "epoch": 3, "batch_pos": 1, "best": 0.5, "since_best": 1, "first_loss": 2.5, "last_loss": 1.25,
         "nan_steps": 0, "consecutive_nan": 0, "stopped_early": False,
         "run": {"steps": 12, "lr": 0.3, "schedule": "cosine", "tasks": ["sst2"], "dev_examples": [8]},
         "loss_curve": [[1, 2.5], [2, 2.0]], "eval_curve": [[2, 0.5]]}
open(d + '/trainer_state/state.json', 'w').write(json.dumps(state))
open(d + '/trainer_state/old.json', 'w').write(json.dumps({k: v for k, v in state.items() if k not in ("run", "last_loss")}))
if os.path.exists(l2c):
    head = open(l2c, 'rb').read(28)
    open(d + '/llama2c_header/stories260k.bin', 'wb').write(struct.pack('<q', os.path.getsize(l2c)) + head)
open(d + '/llama2c_header/tiny.bin', 'wb').write(struct.pack('<q', 1 << 20) + struct.pack('<7i', 8, 16, 1, 2, 1, -32, 16))
open(d + '/jsonl_records/a.jsonl', 'wb').write(b'\x00' + open('tests/data/stories.jsonl', 'rb').read() + b'not json\n{"text": 1}\n')
open(d + '/jsonl_records/b.tsv', 'wb').write(b'\x01text\tlabel\nhello\t1\nbad line\n')
open(d + '/jsonl_records/c.json', 'wb').write(b'\x02[{"text": "a", "label": 0}, 3]')
cr = d + '/completion_request/'
open(cr + 'full.json', 'w').write(json.dumps({"model": "m", "prompt": ["a", "b"], "max_tokens": 3, "temperature": 0.5, "top_p": 0.9,
    "n": 2, "stop": ["\n"], "seed": 7, "logprobs": 2, "echo": True, "stream": True, "stream_options": {"include_usage": True}}))
open(cr + 'ids.json', 'w').write(json.dumps({"model": "m", "prompt": [[1, 2], [3]], "max_tokens": 0, "echo": True, "logprobs": 0}))
open(cr + 'module.json', 'w').write(json.dumps({"name": "qa", "path": "modules/qa"}))
ch = d + '/chat_request/'
open(ch + 'chat.json', 'w').write(json.dumps({"model": "m", "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]},
    {"role": "assistant", "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}],
    "max_completion_tokens": 5, "logprobs": True, "top_logprobs": 3, "tools": [{"type": "function", "function": {"name": "f"}}], "stream": True,
    "stream_options": {"include_usage": True}, "n": 2, "stop": ["a", "b", "c", "d", "e"], "seed": 1}))
open(ch + 'tokenize.json', 'w').write(json.dumps({"messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": False}))
open(ch + 'tokenize_prompt.json', 'w').write(json.dumps({"prompt": "hi", "add_special_tokens": False}))
open(ch + 'detokenize.json', 'w').write(json.dumps({"tokens": [1, 2, 3]}))
# GGUF: a small model-shaped file (metadata, an SPM vocabulary, F32 and Q8_0 tensors) and a small gpt2 vocabulary.
def gstr(s): b = s.encode(); return struct.pack('<Q', len(b)) + b
def gkv(k, t, v): return gstr(k) + struct.pack('<I', t) + v
def garr(t, items): return struct.pack('<IQ', t, len(items)) + b''.join(items)
def gguf(kvs, tensors):
    head = b'GGUF' + struct.pack('<IQQ', 3, len(tensors), len(kvs)) + b''.join(kvs)
    data, off = b'', 0
    for name, ne, typ, payload in tensors:
        head += gstr(name) + struct.pack('<I', len(ne)) + b''.join(struct.pack('<Q', n) for n in ne) + struct.pack('<IQ', typ, off)
        data += payload + b'\0' * ((-len(payload)) % 32); off = len(data)
    return head + b'\0' * ((-len(head)) % 32) + data
toks = ['<unk>', '<s>', '</s>', '<0x0A>', '\u2581', 'H', 'e', 'l', 'o', '\u2581w', 'or', 'ld', 'He', 'll', 'Hello', '\u2581world']
spm = [gkv('general.architecture', 8, gstr('llama')), gkv('llama.embedding_length', 4, struct.pack('<I', 32)),
       gkv('tokenizer.ggml.model', 8, gstr('llama')), gkv('tokenizer.ggml.tokens', 9, garr(8, [gstr(t) for t in toks])),
       gkv('tokenizer.ggml.scores', 9, garr(6, [struct.pack('<f', -i) for i in range(len(toks))])),
       gkv('tokenizer.ggml.token_type', 9, garr(5, [struct.pack('<i', t) for t in [2, 3, 3, 6] + [1] * (len(toks) - 4)])),
       gkv('tokenizer.ggml.bos_token_id', 4, struct.pack('<I', 1)), gkv('tokenizer.ggml.add_bos_token', 7, b'\x01')]
q8 = (struct.pack('<e', 0.01) + bytes(range(32))) * 2
open(d + '/gguf/spm_model.gguf', 'wb').write(gguf(spm, [('token_embd.weight', [32, 2], 8, q8), ('output_norm.weight', [4], 0, b'\0' * 16)]))
bt = ['H', 'e', 'l', 'o', '\u0120', 'w', 'r', 'd', 'He', 'll', 'Hell', 'Hello', '\u0120w', '<|endoftext|>']
gpt2 = [gkv('tokenizer.ggml.model', 8, gstr('gpt2')), gkv('tokenizer.ggml.pre', 8, gstr('gpt-2')),
        gkv('tokenizer.ggml.tokens', 9, garr(8, [gstr(t) for t in bt])),
        gkv('tokenizer.ggml.token_type', 9, garr(5, [struct.pack('<i', 1)] * (len(bt) - 1) + [struct.pack('<i', 3)])),
        gkv('tokenizer.ggml.merges', 9, garr(8, [gstr(m) for m in ['H e', 'l l', 'He ll', 'Hell o', '\u0120 w']])),
        gkv('tokenizer.ggml.eos_token_id', 4, struct.pack('<I', len(bt) - 1))]
open(d + '/gguf/gpt2_vocab.gguf', 'wb').write(gguf(gpt2, []))
# Once a crash (an uncaught JSON error): a byte-level BPE token that is not UTF-8 (now an error naming the token).
bad = [kv if not kv.startswith(gstr('tokenizer.ggml.tokens')) else
       gkv('tokenizer.ggml.tokens', 9, garr(8, [gstr(t) for t in bt[:-2]] + [b'\x02\x00\x00\x00\x00\x00\x00\x00\xa0w', gstr(bt[-1])]))
       for kv in gpt2]
open(d + '/gguf/regression_invalid_utf8_bpe_token.gguf', 'wb').write(gguf(bad, []))
PY

status=0
run_one() {
  local t=$1 seeds corpus="$OUT/corpus-$1"
  shift
  case $t in tokenizer_json) seeds=fuzz/seeds/tokenizer ;; *) seeds="$S/$t" ;; esac
  mkdir -p "$corpus"
  # Inputs that once crashed a target (fuzz/regressions/<target>/) are run first, every time.
  local regress=(); [ -d "fuzz/regressions/$t" ] && regress=("fuzz/regressions/$t")
  "$OUT/fuzz_$t" -runs="$RUNS" -max_len=4096 -timeout=10 -print_final_stats=1 -artifact_prefix="$OUT/crash-$t-" "$@" \
    "$corpus" "$seeds" "${regress[@]}" > "$OUT/fuzz_$t.log" 2>&1
  local rc=$?
  echo "== fuzz_$t ($RUNS runs): exit $rc"
  grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|Done|==.*ERROR|SUMMARY)" "$OUT/fuzz_$t.log" || true
  return $rc
}
export -f run_one
export OUT RUNS S
if [ "$JOBS" -le 1 ]; then
  for t in $TARGETS; do run_one "$t" "$@" || status=1; done
else
  printf '%s\n' $TARGETS | xargs -P "$JOBS" -I{} bash -c 'run_one "$@"' _ {} "$@" || status=1
fi
exit $status
