#!/usr/bin/python3
"""Trains a byte-level BPE tokenizer (GPT-2 style) on the testbed's pretraining corpus and writes a Hugging Face
tokenizer.json. Names such as "Afghanistan" or "Papiamento" then take one or two tokens instead of the five or six
of the children's-stories tokenizer, so the small base model spends its capacity on facts, not spelling.
Deterministic: ties between equally frequent pairs are broken by the pair itself.
Usage: train_bpe.py --corpus pretrain.jsonl --vocab 4096 --out tokenizer.json
"""
import argparse
import collections
import json
import re

# GPT-2's pre-tokenizer regex with \\p{L} / \\p{N} approximated by Python's Unicode classes (training only: the
# tokenizer.json written below names the exact ByteLevel pre-tokenizer that every reader applies).
PRETOK = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+""")
SPECIAL = "<|endoftext|>"


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    b2u = bytes_to_unicode()
    words = collections.Counter()
    for line in open(a.corpus, encoding="utf-8"):
        for w in PRETOK.findall(json.loads(line)["text"]):
            words["".join(b2u[b] for b in w.encode("utf-8"))] += 1
    alphabet = sorted(set(b2u.values()))
    vocab = {SPECIAL: 0}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    seqs = {w: list(w) for w in words}
    pairs = collections.Counter()
    where = collections.defaultdict(set)
    for w, s in seqs.items():
        for p in zip(s, s[1:]):
            pairs[p] += words[w]
            where[p].add(w)
    merges = []
    while len(vocab) < a.vocab and pairs:
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if pairs[best] < 2:
            break
        merged = best[0] + best[1]
        merges.append(best)
        vocab[merged] = len(vocab)
        for w in list(where[best]):
            s, f = seqs[w], words[w]
            for p in zip(s, s[1:]):
                pairs[p] -= f
                if pairs[p] <= 0:
                    del pairs[p]
                where[p].discard(w)
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == best[0] and s[i + 1] == best[1]:
                    out.append(merged)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
            for p in zip(out, out[1:]):
                pairs[p] += f
                where[p].add(w)
        where.pop(best, None)
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 0, "content": SPECIAL, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [f"{x} {y}" for x, y in merges]},
    }
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=1)
    n_tokens = sum(len(seqs[w]) * c for w, c in words.items())
    print(json.dumps({"vocab": len(vocab), "merges": len(merges), "corpus_words": sum(words.values()), "corpus_tokens": n_tokens}))


if __name__ == "__main__":
    main()
