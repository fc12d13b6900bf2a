#!/usr/bin/python3
"""Independent BM25 reference for tests/test_retrieval.cpp: the formula of Xapian's BM25Weight(k1, 0, 1, b, 0.5)
written from its definition (retrieval/bm25.h), over words = lower-cased [a-z0-9]+ runs of title + text (the test
corpus is chosen so that English stemming leaves every word unchanged; the C++ test checks that). Ranks every
passage that contains a query word, best first, ties by corpus order. Writes OUT_DIR/bm25_reference_<k1>_<b>.json
for (k1, b) = (1.2, 0.75) and (2.0, 0.3).
Usage: bm25_reference.py CORPUS.jsonl QUERIES.json OUT_DIR"""
import json, math, os, re, sys

corpus, queries, out_dir = sys.argv[1], sys.argv[2], sys.argv[3]
words = lambda s: re.findall(r"[a-z0-9]+", s.lower())
docs = []
for line in open(corpus):
    d = json.loads(line)
    docs.append((str(d["id"]), words(d.get("title", "")) + words(d["text"])))
N = len(docs)
avg = sum(len(w) for _, w in docs) / N
os.makedirs(out_dir, exist_ok=True)
for k1, b in ((1.2, 0.75), (2.0, 0.3)):
    result = {}
    for q in json.load(open(queries)):
        qf = {}
        for t in words(q):
            qf[t] = qf.get(t, 0) + 1
        scored = []
        for i, (pid, w) in enumerate(docs):
            s, hit = 0.0, False
            for t, c in qf.items():
                tf = w.count(t)
                if tf == 0:
                    continue
                hit = True
                n = sum(1 for _, ww in docs if t in ww)
                idf_ratio = (N - n + 0.5) / (n + 0.5)
                if idf_ratio < 2:
                    idf_ratio = idf_ratio * 0.5 + 1
                L = max(len(w) / avg, 0.5)
                s += math.log(idf_ratio) * (k1 + 1) * (2 * c / (1 + c)) * tf / (k1 * ((1 - b) + b * L) + tf)
            if hit:
                scored.append((-s, i, pid, s))
        scored.sort()
        result[q] = [[pid, s] for _, _, pid, s in scored]
    json.dump(result, open(os.path.join(out_dir, "bm25_reference_%.1f_%.2f.json" % (k1, b)), "w"), indent=1)
