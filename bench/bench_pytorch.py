#!/usr/bin/python3
"""The same computation as bench_frozen_lm.cpp in PyTorch-Python eager (Debian's python3-torch): a random-init Llama
(HF-style eager attention with repeat_kv), weights frozen, (a) forward and (b) forward + backward to the input
embeddings. Prints one JSON line. Usage: bench_pytorch.py [--shape 100m] [--batch 8] [--seq 256] [--threads 2] [--reps 5]"""
import argparse, json, math, resource, statistics, time
import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument('--shape', default='100m'); ap.add_argument('--batch', type=int, default=8)
ap.add_argument('--seq', type=int, default=256); ap.add_argument('--threads', type=int, default=2)
ap.add_argument('--reps', type=int, default=5)
a = ap.parse_args()
torch.set_num_threads(a.threads)
V, d, L, H, Hkv, f = {'100m': (32000, 768, 12, 12, 4, 2048), '1b': (128256, 2048, 16, 32, 8, 8192),
                      'tiny': (512, 64, 2, 4, 2, 128)}[a.shape]
hd = d // H
g = torch.Generator().manual_seed(0)
r = lambda *s: torch.randn(*s, generator=g) * 0.02
emb = r(V, d)
layers = [dict(q=r(H * hd, d), k=r(Hkv * hd, d), v=r(Hkv * hd, d), o=r(d, H * hd), gate=r(f, d), up=r(f, d), down=r(d, f),
               n1=torch.ones(d), n2=torch.ones(d)) for _ in range(L)]
norm = torch.ones(d)
inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))

def rms(x, w): return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))
def rot(x): return torch.cat((-x[..., hd // 2:], x[..., :hd // 2]), -1)

def forward(x):
    B, T, _ = x.shape
    fr = torch.arange(T).float()[:, None] * inv[None]
    e = torch.cat((fr, fr), -1); cos, sin = e.cos(), e.sin()
    mask = torch.full((T, T), float('-inf')).triu(1)
    for w in layers:
        h = rms(x, w['n1'])
        q = F.linear(h, w['q']).view(B, T, H, hd).transpose(1, 2)
        k = F.linear(h, w['k']).view(B, T, Hkv, hd).transpose(1, 2)
        v = F.linear(h, w['v']).view(B, T, Hkv, hd).transpose(1, 2)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k, v = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, -1)
        x = x + F.linear((p @ v).transpose(1, 2).reshape(B, T, d), w['o'])
        h = rms(x, w['n2'])
        x = x + F.linear(F.silu(F.linear(h, w['gate'])) * F.linear(h, w['up']), w['down'])
    return F.linear(rms(x, norm), emb)

ids = torch.randint(0, V, (a.batch, a.seq), generator=g)
targets = ids.roll(-1, 1); targets[:, -1] = -100
def timed(fn):
    fn(); s = []
    for _ in range(a.reps):
        t = time.perf_counter(); fn(); s.append(time.perf_counter() - t)
    return statistics.median(s)
def fwd():
    with torch.no_grad(): forward(emb[ids])
def fwdbwd():
    x = emb[ids].clone().requires_grad_(True)
    logits = forward(x)
    F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-100).backward()
tf, tb = timed(fwd), timed(fwdbwd)
T = a.seq
flops_tok = L * (2 * (d * (H * hd + 2 * Hkv * hd) + H * hd * d + 3 * d * f) + 4 * T * H * hd) + 2 * d * V
flops = flops_tok * a.batch * T
print(json.dumps(dict(impl='pytorch-python', torch=torch.__version__, shape=a.shape, batch=a.batch, seq=T, threads=a.threads,
                      fwd_s=round(tf, 4), fwd_tok_s=round(a.batch * T / tf, 1), fwd_gflops=round(flops / tf / 1e9, 1),
                      fwdbwd_s=round(tb, 4), fwdbwd_tok_s=round(a.batch * T / tb, 1), fwdbwd_gflops=round(2 * flops / tb / 1e9, 1),
                      peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))))
