#!/usr/bin/python3
"""Independent PyTorch reference for frozenlm's tests (run with Debian's /usr/bin/python3: python3-torch, numpy).

Written from the published architectures, sharing no code with the C++ runtime:
  * HF Llama (rotate-half RoPE, llama3 rope scaling, repeat_kv GQA, optional q/k/v bias, SwiGLU)
  * HF GPT-2 (Conv1D [in, out] weights, learned positions, GELU-tanh)
  * llama2.c legacy .bin (interleaved-pair RoPE applied as complex rotation, as run.c does) and its tokenizer.bin
Subcommands:
  fixture --arch llama|gpt2 --out DIR [--seed S]   random-init tiny checkpoint (config.json + model.safetensors)
                                                   and DIR/reference.json: ids, mask and logits of fixed batches
  greedy  --model PATH [--n N]                     greedy token ids from BOS (HF dir or llama2.c .bin)
  llama2c-encode --tokenizer tok.bin --text T      ids as run.c's encode gives them (BOS first)
"""
import argparse, json, math, os, struct, sys
import numpy as np
import torch

torch.set_num_threads(2)

# ---------------------------------------------------------------- safetensors (own minimal writer/reader)
def save_safetensors(path, tensors):
    header, off, blobs = {}, 0, []
    for name, t in tensors.items():
        a = t.detach().contiguous().float().numpy().astype('<f4')
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b); blobs.append(b)
    h = json.dumps(header).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h))); f.write(h)
        for b in blobs: f.write(b)

def load_safetensors(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n)); data = f.read()
    dt = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
    out = {}
    for k, v in header.items():
        if k == '__metadata__': continue
        a, b = v['data_offsets']
        if v['dtype'] == 'BF16':
            u = np.frombuffer(data[a:b], dtype='<u2').astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(data[a:b], dtype=dt[v['dtype']]).astype(np.float32)
        out[k] = torch.from_numpy(arr.reshape(v['shape']).copy())
    return out

# ---------------------------------------------------------------- HF Llama
def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

def llama_inv_freq(cfg, hd):
    base = cfg.get('rope_theta', 10000.0)
    inv = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    rs = cfg.get('rope_scaling')
    if rs and rs.get('rope_type', rs.get('type')) == 'llama3':
        factor, lo, hi, old = rs['factor'], rs['low_freq_factor'], rs['high_freq_factor'], rs['original_max_position_embeddings']
        low_wl, high_wl = old / lo, old / hi
        wl = 2 * math.pi / inv
        inv_l = torch.where(wl > low_wl, inv / factor, inv)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
        medium = ~(wl < high_wl) * ~(wl > low_wl)
        inv = torch.where(medium, smoothed, inv_l)
    elif rs and rs.get('rope_type', rs.get('type')) == 'linear':
        inv = inv / rs['factor']
    return inv

def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)

def llama_forward(cfg, W, ids, mask=None):
    """ids [B,T]; mask [B,T] (1 real). Positions = cumsum(mask)-1, as HF generate() uses for padded batches."""
    B, T = ids.shape
    d, H = cfg['hidden_size'], cfg['num_attention_heads']
    Hkv = cfg.get('num_key_value_heads', H)
    hd = cfg.get('head_dim', d // H)
    eps = cfg['rms_norm_eps']
    if mask is None: mask = torch.ones(B, T, dtype=torch.long)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    emb = W.get('model.embed_tokens.weight', W.get('lm_head.weight'))
    x = emb[ids]
    inv = llama_inv_freq(cfg, hd)
    freqs = pos[:, :, None].float() * inv[None, None, :]
    e = torch.cat((freqs, freqs), -1)
    cos, sin = e.cos()[:, None], e.sin()[:, None]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    allowed = causal[None] & mask.bool()[:, None, :]
    bias = cfg.get('attention_bias', False) or cfg.get('model_type') == 'qwen2'
    for l in range(cfg['num_hidden_layers']):
        p = f'model.layers.{l}.'
        h = rms_norm(x, W[p + 'input_layernorm.weight'], eps)
        def proj(n):
            y = h @ W[p + f'self_attn.{n}_proj.weight'].T
            return y + W[p + f'self_attn.{n}_proj.bias'] if bias else y
        q = proj('q').view(B, T, H, hd).transpose(1, 2)
        k = proj('k').view(B, T, Hkv, hd).transpose(1, 2)
        v = proj('v').view(B, T, Hkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        s = s.masked_fill(~allowed[:, None], float('-inf'))
        a = torch.nan_to_num(torch.softmax(s, -1)) @ v
        o = a.transpose(1, 2).reshape(B, T, H * hd) @ W[p + 'self_attn.o_proj.weight'].T
        if cfg.get('attention_bias', False) and cfg.get('model_type') != 'qwen2': o = o + W[p + 'self_attn.o_proj.bias']
        x = x + o
        h = rms_norm(x, W[p + 'post_attention_layernorm.weight'], eps)
        g = h @ W[p + 'mlp.gate_proj.weight'].T
        u = h @ W[p + 'mlp.up_proj.weight'].T
        x = x + (torch.nn.functional.silu(g) * u) @ W[p + 'mlp.down_proj.weight'].T
    x = rms_norm(x, W['model.norm.weight'], eps)
    head = emb if cfg.get('tie_word_embeddings', False) else W['lm_head.weight']
    return x @ head.T

# ---------------------------------------------------------------- HF GPT-2
def gpt2_forward(cfg, W, ids, mask=None):
    B, T = ids.shape
    d, H = cfg['n_embd'], cfg['n_head']; hd = d // H; eps = cfg.get('layer_norm_epsilon', 1e-5)
    if mask is None: mask = torch.ones(B, T, dtype=torch.long)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    ln = lambda x, n: torch.nn.functional.layer_norm(x, (d,), W[n + '.weight'], W[n + '.bias'], eps)
    conv = lambda x, n: x @ W[n + '.weight'] + W[n + '.bias']   # Conv1D: weight [in, out]
    x = W['wte.weight'][ids] + W['wpe.weight'][pos]
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))[None] & mask.bool()[:, None, :]
    for l in range(cfg['n_layer']):
        p = f'h.{l}.'
        qkv = conv(ln(x, p + 'ln_1'), p + 'attn.c_attn')
        q, k, v = qkv.split(d, dim=-1)
        q, k, v = [t.view(B, T, H, hd).transpose(1, 2) for t in (q, k, v)]
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        s = s.masked_fill(~allowed[:, None], float('-inf'))
        a = torch.nan_to_num(torch.softmax(s, -1)) @ v
        x = x + conv(a.transpose(1, 2).reshape(B, T, d), p + 'attn.c_proj')
        m = conv(ln(x, p + 'ln_2'), p + 'mlp.c_fc')
        m = 0.5 * m * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (m + 0.044715 * m.pow(3))))
        x = x + conv(m, p + 'mlp.c_proj')
    x = ln(x, 'ln_f')
    return x @ W['wte.weight'].T

# ---------------------------------------------------------------- llama2.c (as run.c computes it)
def load_llama2c(path):
    raw = open(path, 'rb').read()
    dim, hidden, L, H, Hkv, V, S = struct.unpack('<7i', raw[:28])
    shared = V > 0; V = abs(V)
    a = np.frombuffer(raw[28:], dtype='<f4')
    hd = dim // H; kvd = Hkv * hd; off = 0
    def take(*shape):
        nonlocal off
        n = int(np.prod(shape)); t = torch.from_numpy(a[off:off + n].copy()).view(*shape); off += n; return t
    W = dict(tok=take(V, dim), rms_att=take(L, dim), wq=take(L, dim, dim), wk=take(L, kvd, dim), wv=take(L, kvd, dim),
             wo=take(L, dim, dim), rms_ffn=take(L, dim), w1=take(L, hidden, dim), w2=take(L, dim, hidden),
             w3=take(L, hidden, dim), rms_final=take(dim))
    off += S * hd  # freq_cis_real, freq_cis_imag
    W['wcls'] = W['tok'] if shared else take(V, dim)
    return dict(dim=dim, L=L, H=H, Hkv=Hkv, V=V, S=S, hd=hd), W

def llama2c_forward(c, W, ids):
    T = len(ids); H, Hkv, hd = c['H'], c['Hkv'], c['hd']
    x = W['tok'][torch.tensor(ids)]
    rms = lambda x, w: w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5))
    pos = torch.arange(T).float()
    freq = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
    ang = pos[:, None] * freq[None]
    rot = torch.polar(torch.ones_like(ang), ang)  # [T, hd/2]
    def rope(t):  # t [T, heads, hd]: rotate interleaved pairs (t0,t1),(t2,t3),...
        tc = torch.view_as_complex(t.reshape(T, t.shape[1], hd // 2, 2).contiguous())
        return torch.view_as_real(tc * rot[:, None]).reshape(T, t.shape[1], hd)
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(c['L']):
        h = rms(x, W['rms_att'][l])
        q = rope((h @ W['wq'][l].T).view(T, H, hd))
        k = rope((h @ W['wk'][l].T).view(T, Hkv, hd)).repeat_interleave(H // Hkv, dim=1)
        v = (h @ W['wv'][l].T).view(T, Hkv, hd).repeat_interleave(H // Hkv, dim=1)
        s = torch.einsum('thd,shd->hts', q, k) / math.sqrt(hd)
        s = s.masked_fill(~mask[None], float('-inf'))
        a = torch.einsum('hts,shd->thd', torch.softmax(s, -1), v).reshape(T, H * hd)
        x = x + a @ W['wo'][l].T
        h = rms(x, W['rms_ffn'][l])
        x = x + (torch.nn.functional.silu(h @ W['w1'][l].T) * (h @ W['w3'][l].T)) @ W['w2'][l].T
    return rms(x, W['rms_final']) @ W['wcls'].T

def llama2c_encode(tok_path, text):
    raw = open(tok_path, 'rb').read()
    off = 4; vocab, scores = [], []
    while off < len(raw):
        s, n = struct.unpack('<fi', raw[off:off + 8]); off += 8
        vocab.append(raw[off:off + n]); scores.append(s); off += n
    index = {}
    for i, v in enumerate(vocab): index.setdefault(v, i)
    ids = [1]
    if not text: return ids
    sym = [index[b' ']]
    for ch in text:
        b = ch.encode('utf-8')
        sym += [index[b]] if b in index else [x + 3 for x in b]
    while True:
        best, bi, bid = -1e10, -1, -1
        for i in range(len(sym) - 1):
            m = vocab[sym[i]] + vocab[sym[i + 1]]
            if m in index and scores[index[m]] > best: best, bi, bid = scores[index[m]], i, index[m]
        if bid < 0: break
        sym[bi:bi + 2] = [bid]
    return ids + sym

# ---------------------------------------------------------------- SQuAD v1.1 metrics (as its official evaluate script)
# A port of SQuAD v1.1's official evaluate-v1.1.py (normalize_answer, f1_score, exact_match_score, max over ground
# truths), and v2.0's compute_f1 empty-answer rule, run on Python str as the official scripts are.
def squad_normalize(s):
    import re, string
    def remove_articles(text): return re.sub(r'\b(a|an|the)\b', ' ', text)
    def white_space_fix(text): return ' '.join(text.split())
    def remove_punc(text):
        exclude = set(string.punctuation)
        return ''.join(ch for ch in text if ch not in exclude)
    def lower(text): return text.lower()
    return white_space_fix(remove_articles(remove_punc(lower(s))))

def squad_f1_v11(prediction, ground_truth):
    from collections import Counter
    prediction_tokens = squad_normalize(prediction).split()
    ground_truth_tokens = squad_normalize(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)

def squad_f1_v20(a_gold, a_pred):
    from collections import Counter
    gold_toks = squad_normalize(a_gold).split() if a_gold else []
    pred_toks = squad_normalize(a_pred).split() if a_pred else []
    common = Counter(gold_toks) & Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)

SQUAD_CASES = [
    ("The Eiffel Tower", ["Eiffel Tower"]), ("eiffel tower!", ["the Eiffel Tower"]), ("Paris, France", ["Paris"]),
    ("14 December 1972", ["14 December 1972 UTC", "December 1972"]), ("", [""]), ("", ["something"]), ("an apple a day", ["apple day"]),
    ("Bobby Scott and Bob Russell", ["Bobby Scott", "Bob Russell"]), ("the the the", ["the"]), ("U.S.A.", ["USA"]),
    ("cat cat dog", ["cat dog dog"]), ("theater", ["the ater"]), ("  spaced   out  ", ["spaced out"]), ("Café au lait", ["cafe au lait"]),
    ("1,000", ["1000"]), ("Alpha-Beta", ["alphabeta", "alpha beta"]), ("no overlap", ["entirely different"]),
    # non-ASCII punctuation stays (string.punctuation is ASCII) and separates words for \b
    ("\u00abthe\u00bb Eiffel", ["Eiffel"]), ("the\u2014end", ["end"]), ("\u201cThe Beatles\u201d", ["Beatles"]),
    ("a\u2026", [""]), ("\u00bfQu\u00e9?", ["qu\u00e9"]), ("Paris\u3002", ["paris"]), ("l\u2019an", ["l an"]),
    ("the\u00b7a\u00b7an", ["the a an"]), ("\u2018a\u2019 team", ["team"]),
    # non-breaking and other Unicode spaces split words (str.split), ASCII \x1c-\x1f too
    ("New\u00a0York", ["new york"]), ("the\u00a0city", ["city"]), ("a\u2009b", ["b"]), ("x\u3000y", ["x y"]),
    ("one\x1ctwo", ["one two"]), ("tab\tand\nnewline", ["tab and newline"]), ("zero\u200bwidth", ["zero width"]),
    # articles glued to ASCII punctuation: punctuation goes first, so the article is no longer a word of its own
    ("the-end", ["end"]), ("(the) end", ["end"]), ("a.k.a.", ["aka"]), ("the_end", ["end"]), ("an_apple", ["apple"]),
    ("The1975", ["1975"]), ("a1 steak", ["steak"]),
    # Unicode case: str.lower on every script, U+0130, final sigma; combining marks are not word characters
    ("\u00c9COLE", ["\u00e9cole"]), ("\u039f\u0394\u039f\u03a3", ["\u03bf\u03b4\u03bf\u03c2"]), ("\u0130stanbul", ["istanbul"]),
    ("\u041c\u041e\u0421\u041a\u0412\u0410", ["\u043c\u043e\u0441\u043a\u0432\u0430"]), ("the\u0301 end", ["end"]),
    ("\u00e0 la carte", ["la carte"]), ("THE END", ["end"]), ("An", [""]), ("theA", ["thea"]), ("\u212a", ["k"]),
    ("\u1e9e", ["\u00df"]), ("\u24b6", ["\u24d0"]), ("\U0001d400 the", ["\U0001d400"]),
    # empty after normalisation: v1.1 F1 0, v2.0 F1 1
    ("the", ["a"]), ("!!!", [""]), ("", ["the"]),
]

def cmd_squad(a):
    out = []
    for pred, golds in SQUAD_CASES:
        out.append({"prediction": pred, "golds": golds, "normalized": squad_normalize(pred),
                    "em": max(float(squad_normalize(pred) == squad_normalize(g)) for g in golds),
                    "f1": float(max(squad_f1_v11(pred, g) for g in golds)),
                    "f1_v2": float(max(squad_f1_v20(g, pred) for g in golds))})
    print(json.dumps(out))

# ---------------------------------------------------------------- commands
def tiny_config(arch):
    if arch == 'llama':
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 97, "hidden_size": 48,
                "intermediate_size": 80, "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2,
                "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
                "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 16},
                "attention_bias": True, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
                "hidden_act": "silu", "torch_dtype": "float32"}
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": 101, "n_embd": 48, "n_layer": 2,
            "n_head": 4, "n_positions": 64, "n_inner": None, "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5, "bos_token_id": 0, "eos_token_id": 0}

def random_weights(arch, cfg, g):
    r = lambda *s: torch.randn(*s, generator=g) * 0.2
    W = {}
    if arch == 'llama':
        d, H, Hkv = cfg['hidden_size'], cfg['num_attention_heads'], cfg['num_key_value_heads']; hd = d // H
        f, V = cfg['intermediate_size'], cfg['vocab_size']
        W['model.embed_tokens.weight'] = r(V, d)
        for l in range(cfg['num_hidden_layers']):
            p = f'model.layers.{l}.'
            W[p + 'input_layernorm.weight'] = 1 + r(d); W[p + 'post_attention_layernorm.weight'] = 1 + r(d)
            for n, o in (('q', H * hd), ('k', Hkv * hd), ('v', Hkv * hd)):
                W[p + f'self_attn.{n}_proj.weight'] = r(o, d); W[p + f'self_attn.{n}_proj.bias'] = r(o)
            W[p + 'self_attn.o_proj.weight'] = r(d, H * hd); W[p + 'self_attn.o_proj.bias'] = r(d)
            W[p + 'mlp.gate_proj.weight'] = r(f, d); W[p + 'mlp.up_proj.weight'] = r(f, d); W[p + 'mlp.down_proj.weight'] = r(d, f)
        W['model.norm.weight'] = 1 + r(d); W['lm_head.weight'] = r(V, d)
    else:
        d, V, P = cfg['n_embd'], cfg['vocab_size'], cfg['n_positions']
        W['wte.weight'] = r(V, d); W['wpe.weight'] = r(P, d)
        for l in range(cfg['n_layer']):
            p = f'h.{l}.'
            for n in ('ln_1', 'ln_2'): W[p + n + '.weight'] = 1 + r(d); W[p + n + '.bias'] = r(d)
            W[p + 'attn.c_attn.weight'] = r(d, 3 * d); W[p + 'attn.c_attn.bias'] = r(3 * d)
            W[p + 'attn.c_proj.weight'] = r(d, d); W[p + 'attn.c_proj.bias'] = r(d)
            W[p + 'mlp.c_fc.weight'] = r(d, 4 * d); W[p + 'mlp.c_fc.bias'] = r(4 * d)
            W[p + 'mlp.c_proj.weight'] = r(4 * d, d); W[p + 'mlp.c_proj.bias'] = r(d)
        W['ln_f.weight'] = 1 + r(d); W['ln_f.bias'] = r(d)
    return W

def cmd_fixture(a):
    os.makedirs(a.out, exist_ok=True)
    g = torch.Generator().manual_seed(a.seed)
    cfg = tiny_config(a.arch)
    W = random_weights(a.arch, cfg, g)
    json.dump(cfg, open(os.path.join(a.out, 'config.json'), 'w'), indent=1)
    save_safetensors(os.path.join(a.out, 'model.safetensors'), W)
    V = cfg['vocab_size']
    ids = torch.randint(0, V, (3, 20), generator=g)
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[1, :5] = 0      # left padding
    mask[2, 14:] = 0     # right padding
    fwd = llama_forward if a.arch == 'llama' else gpt2_forward
    with torch.no_grad():
        logits = fwd(cfg, W, ids, mask)
    json.dump({"ids": ids.tolist(), "mask": mask.tolist(), "logits": logits.tolist()},
              open(os.path.join(a.out, 'reference.json'), 'w'))

def cmd_greedy(a):
    with torch.no_grad():
        if os.path.isdir(a.model):
            cfg = json.load(open(os.path.join(a.model, 'config.json')))
            W = load_safetensors(os.path.join(a.model, 'model.safetensors'))
            fwd = (lambda ids: llama_forward(cfg, W, torch.tensor([ids]))[0]) if cfg['model_type'] != 'gpt2' else \
                  (lambda ids: gpt2_forward(cfg, W, torch.tensor([ids]))[0])
            ids = [cfg.get('bos_token_id', 1)]
        else:
            c, W = load_llama2c(a.model)
            fwd = lambda ids: llama2c_forward(c, W, ids)
            ids = [1]
        for _ in range(a.n):
            ids.append(int(fwd(ids)[-1].argmax()))
    print(json.dumps(ids))

def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest='cmd', required=True)
    f = sub.add_parser('fixture'); f.add_argument('--arch', required=True); f.add_argument('--out', required=True); f.add_argument('--seed', type=int, default=0)
    g = sub.add_parser('greedy'); g.add_argument('--model', required=True); g.add_argument('--n', type=int, default=40)
    sub.add_parser('squad-metrics')
    e = sub.add_parser('llama2c-encode'); e.add_argument('--tokenizer', required=True); e.add_argument('--text', required=True)
    a = ap.parse_args()
    if a.cmd == 'fixture': cmd_fixture(a)
    elif a.cmd == 'greedy': cmd_greedy(a)
    elif a.cmd == 'squad-metrics': cmd_squad(a)
    else: print(json.dumps(llama2c_encode(a.tokenizer, a.text)))

if __name__ == '__main__':
    main()
