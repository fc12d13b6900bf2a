#!/usr/bin/python3
"""The frozen-reader experiments' retrieval corpus (issue 11): every testbed passage (corpus/retrieval.jsonl: one per
entity and section, the gold passages of the QA tasks; corpus/reader_fresh.jsonl: the reader's training entities) plus
distractors from two Debian dictionaries, so that retrieval
has to find the gold among >= 200,000 passages:
  - WordNet 3.0 glosses (Debian wordnet-base): one passage per synset, "words: gloss" (117,659);
  - GCIDE, the Collaborative International Dictionary of English (Debian dict-gcide, GPL): one passage per entry,
    markup removed (pronunciations, {links}, [1913 Webster] tags), headword as the title.
Distractors may state facts the testbed also asks about (a WordNet gloss "the capital of Algeria"): such a passage then
counts as answer-bearing, as any real corpus would. Deterministic; one JSONL line {id, title, text, source} a passage.
Usage: build_retrieval_corpus.py TESTBED_BUILD_DIR OUT.jsonl"""
import base64
import gzip
import json
import os
import re
import sys

build, out_path = sys.argv[1], sys.argv[2]
WORDNET = "/usr/share/wordnet"
GCIDE = "/usr/share/dictd/gcide"
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64num(s):  # dictd's index numbers: base 64, most significant digit first
    n = 0
    for c in s:
        n = n * 64 + B64.index(c)
    return n


out = open(out_path, "w")
counts = {}


def emit(pid, title, text, source):
    text = " ".join(text.split())
    if not text:
        return
    out.write(json.dumps({"id": pid, "title": title, "text": text, "source": source}, ensure_ascii=False) + "\n")
    counts[source] = counts.get(source, 0) + 1


for line in open(os.path.join(build, "corpus", "retrieval.jsonl")):
    d = json.loads(line)
    emit(d["id"], d["title"], d["text"], "testbed")
# the fresh fictional entities of the reader's training questions (testbed/build_reader_fresh.py)
for line in open(os.path.join(build, "corpus", "reader_fresh.jsonl")):
    d = json.loads(line)
    emit(d["id"], d["title"], d["text"], "testbed_fresh")

for pos in ("noun", "verb", "adj", "adv"):
    for line in open(os.path.join(WORDNET, "data." + pos), encoding="latin-1"):
        if line.startswith("  "):  # licence header
            continue
        head, _, gloss = line.partition("|")
        f = head.split()
        offset, n = f[0], int(f[3], 16)
        words = [f[4 + 2 * i].replace("_", " ") for i in range(n)]
        words = [re.sub(r"\([a-z]+\)$", "", w) for w in words]  # adjective markers like "(a)"
        emit(f"wn:{pos}:{offset}", words[0], ", ".join(words) + ": " + gloss.strip(), "wordnet")

data = gzip.open(GCIDE + ".dict.dz").read()
seen = set()
for line in open(GCIDE + ".index", encoding="utf-8"):
    head, off, length = line.rstrip("\n").split("\t")
    if head.startswith("00-"):
        continue
    start, n = b64num(off), b64num(length)
    if start in seen:
        continue
    seen.add(start)
    text = data[start:start + n].decode("utf-8", "replace")
    text = re.sub(r"\\[^\\\n]*\\", " ", text)          # \Pro*nun"ci*a`tion\
    text = re.sub(r"\[(1913 Webster|PJC|WordNet 1\.5|Webster 1913 Suppl\.)[^\]]*\]", " ", text)
    text = re.sub(r"[{}]", "", text)
    emit(f"gcide:{start}", head, text, "gcide")

out.close()
total = sum(counts.values())
print(json.dumps({"passages": total, **counts}))
if total < 200000:
    sys.exit(f"only {total} passages (< 200,000)")
