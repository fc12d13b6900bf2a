"""A client that speaks to `frozenlm serve` exactly as lm-evaluation-harness's `local-completions` model does (its
request payloads, its parsing of the answers, its remote-tokenizer probe), with the Python standard library only,
checked against `frozenlm score` and `frozenlm generate` on the same model and module.

Usage: python3 tests/lm_eval_client.py BASE_URL API_KEY FROZENLM_BINARY MODEL_DIR MODULE_DIR MODULE_NAME
(BASE_URL: the server root, e.g. http://127.0.0.1:8080). Prints "ok ..." lines; "FAILED: ..." and exit 1 otherwise.

What lm-eval sends (lm_eval/models/openai_completions.py, LocalCompletionsAPI):
  loglikelihood   {"model", "prompt": [[context + continuation token ids], ...], "temperature": 0, "max_tokens": 1,
                   "logprobs": 1, "seed": 1234, "echo": true}; it reads choices (sorted by index), and for each
                   sum(token_logprobs[ctxlen:-1]) and is_greedy = every token_logprob equals max(top_logprobs[i].values())
  generate_until  {"model", "prompt": [text, ...], "max_tokens", "temperature": 0, "stop": until + [eos], "seed": 1234}
  remote tokenizer GET /tokenizer_info; POST /tokenize {"model", "prompt", "add_special_tokens"} -> "tokens";
                   POST /detokenize {"model", "tokens"} -> "prompt"
"""
import json
import subprocess
import sys
import urllib.request

base, key, binary, model_dir, module_dir, module = sys.argv[1:7]


def check(cond, what):
    if not cond:
        print("FAILED: " + what)
        sys.exit(1)
    print("ok " + what)


def call(path, payload=None):
    req = urllib.request.Request(base + path, data=None if payload is None else json.dumps(payload).encode(),
                                 headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def frozenlm(*args):
    return subprocess.run([binary, *args, "--model", model_dir, "--threads", "1"], check=True, capture_output=True, text=True).stdout


# ---- the remote tokenizer's probe ----
info = call("/tokenizer_info")
check(isinstance(info.get("eos_token"), str) and "chat_template" in info and info.get("model_max_length", 0) > 0,
      "GET /tokenizer_info: eos_token %r, model_max_length %d" % (info["eos_token"], info["model_max_length"]))
eos = info["eos_token"]

# ---- loglikelihood: context + continuation token ids, batched, echo + logprobs, max_tokens 1 ----
pairs = [("Question: What is the capital of Germany?\nAnswer:", " Berlin"),
         ("Question: What is the capital of France?\nAnswer:", " Paris"),
         ("Question: What is the chemical symbol of gold?\nAnswer:", " Au"),
         ("Question: What is the capital of Germany?\nAnswer:", " Madrid")]
for model in ("testbed", module):
    prompts, ctxlens, want = [], [], []
    for context, continuation in pairs:
        ctx = call("/tokenize", {"model": model, "prompt": context, "add_special_tokens": True})["tokens"]
        cont = call("/tokenize", {"model": model, "prompt": continuation, "add_special_tokens": False})["tokens"]
        args = ["score", "--prompt", context, "--text", continuation, "--json"] + (["--module", module_dir] if model == module else [])
        ref = json.loads(frozenlm(*args))
        check(len(ctx) == ref["prompt_tokens"] and cont == ref["tokens"],
              "%s: /tokenize gives the context and continuation ids `frozenlm score` reads (%d + %d)" % (model, len(ctx), len(cont)))
        prompts.append(ctx + cont)
        ctxlens.append(len(ctx))
        want.append(ref)
    out = call("/v1/completions", {"model": model, "prompt": prompts, "temperature": 0, "max_tokens": 1, "logprobs": 1, "seed": 1234, "echo": True})
    choices = sorted(out["choices"], key=lambda c: c["index"])
    check(len(choices) == len(pairs), "%s: one choice per context" % model)
    for k, (choice, ctxlen, ref, (context, continuation)) in enumerate(zip(choices, ctxlens, want, pairs)):
        lps = choice["logprobs"]["token_logprobs"][ctxlen:-1]
        tops = choice["logprobs"]["top_logprobs"][ctxlen:-1]
        total = sum(lps)
        is_greedy = all(lp == max(top.values()) for lp, top in zip(lps, tops))
        worst = max(abs(a - b) for a, b in zip(lps, ref["logprobs"]))
        check(len(lps) == len(ref["logprobs"]) and worst < 1e-4,
              "%s %r: loglikelihood %.5f as `frozenlm score` (%.5f; largest token difference %.1e), greedy %s"
              % (model, continuation, total, ref["total"], worst, is_greedy))
        # is_greedy, as lm-eval derives it, says whether greedy decoding from the context writes the continuation
        greedy = call("/v1/completions", {"model": model, "prompt": prompts[k][:ctxlen],
                                          "max_tokens": len(lps), "temperature": 0, "logprobs": 0})["choices"][0]
        writes_it = greedy["logprobs"]["tokens"] == choice["logprobs"]["tokens"][ctxlen:-1]
        check(is_greedy == writes_it, "%s %r: is_greedy (%s) agrees with greedy decoding from the context" % (model, continuation, is_greedy))

# ---- generate_until: text prompts, until + EOS as stop (more than OpenAI's 4), greedy, seeded ----
until = ["\n", "\n\n", "Question:", "Answer:", "</s>", "<|im_end|>"]
context = "Question: What is the capital of Germany?\nAnswer:"
out = call("/v1/completions", {"prompt": [context, context], "model": module, "max_tokens": 24, "temperature": 0,
                               "stop": until + [eos], "seed": 1234})
texts = [None] * len(out["choices"])
for c in out["choices"]:
    texts[c["index"]] = c["text"]
full = frozenlm("generate", "--module", module_dir, "--prompt", context, "--temperature", "0", "--max-new-tokens", "24")
expected = full[len(context):]
for s in until + [eos]:
    expected = expected.split(s)[0]
check(texts == [expected, expected], "generate_until with %d stop strings equals `frozenlm generate` cut at the first: %r" % (len(until) + 1, expected))

# ---- detokenize round trip ----
ids = call("/tokenize", {"model": module, "prompt": context, "add_special_tokens": False})["tokens"]
check(call("/detokenize", {"model": module, "tokens": ids})["prompt"] == context, "POST /detokenize reads back the text")
print("ok lm-eval's local-completions protocol")
