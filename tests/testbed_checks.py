#!/usr/bin/python3
"""Checks of the knowledge-testbed builder (issue 5): two builds with the same seed are byte-identical; no held-out
entity's passage (nor its name as a passage title) is in the pretraining corpus; every question's answer is in its
gold passage; held-out questions only in test_heldout; the test phrasing family never appears in train/dev.
Usage: testbed_checks.py BUILD_SCRIPT WORK_DIR"""
import json, os, subprocess, sys, glob

build, work = sys.argv[1], sys.argv[2]
a, b = os.path.join(work, "a"), os.path.join(work, "b")
for d in (a, b):
    subprocess.run(["rm", "-rf", d], check=True)
    subprocess.run(["bash", build, d, "0"], check=True, stdout=subprocess.DEVNULL)
ma, mb = json.load(open(os.path.join(a, "MANIFEST.json"))), json.load(open(os.path.join(b, "MANIFEST.json")))
assert ma["files"] == mb["files"], "two builds with the same seed differ"
assert len(ma["files"]) > 40, ma["files"].keys()

entities = {e["key"]: e for e in json.load(open(os.path.join(a, "entities.json")))}
held = {k for k, e in entities.items() if e["split"] == "heldout"}
assert 0.15 < len(held) / len(entities) < 0.25, len(held)
pre = [json.loads(l) for l in open(os.path.join(a, "corpus/pretrain.jsonl"))]
retr = [json.loads(l) for l in open(os.path.join(a, "corpus/retrieval.jsonl"))]
held_texts = {p["text"] for p in retr if p["entity"] in held}
assert held_texts, "no held-out passages in the retrieval corpus"
pre_texts = {p["text"] for p in pre}
assert not (held_texts & pre_texts), "a held-out passage is in the pretraining corpus"
assert not any(p["entity"] in held for p in pre), "a held-out entity has a pretraining passage"
held_titles = {entities[k]["name"] for k in held}
assert not any(p["title"] in held_titles for p in pre), "a held-out title is in the pretraining corpus"
print(f"{len(pre)} pretraining passages, {len(retr)} retrieval passages, {len(held)} held-out entities: disjoint")

n = 0
for path in sorted(glob.glob(os.path.join(a, "data", "qa_*.jsonl"))):
    split = os.path.basename(path).split("_", 2)[2].rsplit(".", 1)[0].split("_", 1)[-1]
    for line in open(path):
        r = json.loads(line)
        assert r["answer"].lower() in r["passage"].lower(), (path, r["question"], r["answer"])
        assert (r["entity"] in held) == path.endswith("_test_heldout.jsonl"), (path, r["entity"])
        if path.endswith(("_train.jsonl", "_dev.jsonl")):
            assert r["phrasing"] != 2, (path, r["question"])
        n += 1
assert n > 3000, n
print(f"{n} questions: every answer is in its gold passage; held-out entities only in test_heldout; phrasing 2 only in test")

# every country fact opens a short section passage, and a country question's gold passage is that section's
sections = {"capital": "government", "currency": "economy", "language": "people", "region": "geography"}
for rel, sec in sections.items():
    for line in open(os.path.join(a, "data", f"qa_{rel}_train.jsonl")):
        r = json.loads(line)
        assert r["gold_passage_id"] == f"{r['entity']}#{sec}#0", (rel, r["gold_passage_id"])
        assert r["answer"].lower() in r["passage"].split(". ")[0].lower(), r  # the fact opens the passage
# "is W a kind of animal?" is not a one-label task
labels = [json.loads(l)["label"] for l in open(os.path.join(a, "data", "cls_animal_train.jsonl"))]
assert 0.15 < sum(labels) / len(labels) < 0.4, sum(labels) / len(labels)
# the mixtures name task files that exist
for mix in ("closed_book", "open_book", "classification"):
    m = json.load(open(os.path.join(a, "tasks", f"mix_{mix}.json")))
    assert len(m["tasks"]) >= 4 and all(os.path.exists(os.path.join(a, "tasks", t)) for t in m["tasks"]), m
print("section passages, animal balance and mixtures checked")
print("testbed checks passed")
