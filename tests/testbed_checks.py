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

# ---- v2 pretraining mixture guardrails (issue 10)
import re
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(build)), ""))
import build_testbed as tb  # noqa: E402  (the benchmark's question phrasings)
v2 = [json.loads(l) for l in open(os.path.join(a, "corpus/pretrain_v2.jsonl"))]
kinds = {d["kind"] for d in v2}
assert kinds >= {"real_passage", "fictional_passage", "fictional_qa", "real_qa", "reading_fresh", "reading_counterfactual", "yes_no",
                 "multiple_choice"}, kinds
group = {k: tb.entity_group(e) for k, e in entities.items()}
# 1. the benchmark's question phrasings (all three families) appear in no pretraining question
bench = [re.compile("Question: " + re.escape(t).replace(re.escape("{x}"), ".+?").replace(re.escape("{a}"), ".+?")
                    .replace(re.escape("{A}"), ".+?") + "\n") for _, _, phr in tb.RELATIONS.values() for t in phr]
questions = [d["text"][d["text"].index("Question: "):] for d in v2 if "Question: " in d["text"]]
assert len(questions) > 1000, len(questions)
for q in questions:
    for b in bench:
        assert not b.match(q), ("a benchmark phrasing is in pretraining", q[:120], b.pattern)
# 2. no pretraining question is about a held-out or seen-never-QA-trained entity
asked = [d for d in v2 if "about" in d]
assert len(asked) == len(questions), (len(asked), len(questions))
bad = [d for d in asked if group.get(d["about"]) in ("heldout", "seen_unqa")]
assert not bad, ("a question about a benchmark test entity is in pretraining", bad[0])
import mixture_v2 as mv  # noqa: E402
by_name = {entities[k]["name"]: g for k, g in group.items()}
slots = [re.compile("Question: " + re.escape(t).replace(re.escape("{x}"), "(?P<x>.+?)") + "(?: |\n)") for _, _, ts in mv.PRETRAIN_QUESTIONS.values()
         for t in ts if "{x}" in t]
n_named = 0
for q in questions:  # the entity a question names (countries, elements; nouns are checked by "about" above)
    for sl in slots:
        m = sl.match(q)
        if m:
            n_named += 1
            assert by_name.get(m.group("x"), "qa_trained") == "qa_trained", ("a question names a test entity", m.group("x"), q[:100])
            break
assert n_named > len(questions) // 2, n_named
# 3. no pretraining document states a held-out entity's fact (its name may occur in a neighbour's border list)
for k in held:
    e = entities[k]
    vals = [str(e[f]) for f in ("capital", "currency", "symbol") if e.get(f)]
    for d in v2:
        if e["name"] in d["text"]:
            for sent in re.split(r"(?<=\.) ", d["text"]):
                if re.search(r"(?<!\w)" + re.escape(e["name"]) + r"(?!\w)", sent):
                    assert not any(re.search(r"(?<!\w)" + re.escape(v) + r"(?!\w)", sent) for v in vals), (k, sent)
# 4. every reading document's answer is in its gold passage as a whole span, and the gold passage is in the context
reading = [d for d in v2 if d["kind"].startswith("reading_")]
assert len(reading) > 0.1 * len(v2) * 0.5, len(reading)
for d in reading:
    assert d["gold"] in d["text"].split("\nQuestion: ")[0], d
    assert re.search(r"(?<![\w,.])" + re.escape(d["answer"]) + r"(?![\w]|[,.]\d)", d["gold"]), d
    assert d["text"].endswith("\nAnswer: " + d["answer"]), d
# 5. fictional names are no real entity's name, and the skill probes' fresh entities never occur in pretraining
fic = [json.loads(l) for l in open(os.path.join(a, "corpus/fictional_entities.jsonl"))]
real_names = {e["name"].lower() for e in entities.values()}
assert not any(f["name"].lower() in real_names for f in fic)
words = set()
for d in v2:
    words.update(re.findall(r"[A-Za-z]+", d["text"]))
fresh = [json.loads(l)["name"] for l in open(os.path.join(a, "data", "skill_read_fresh.jsonl"))]
assert len(fresh) == 400 and not any(n in words for n in fresh), [n for n in fresh if n in words][:5]
cf = [json.loads(l) for l in open(os.path.join(a, "data", "skill_counterfactual.jsonl"))]
assert cf and all(group[r["entity"]] == "seen_unqa" and r["answer"] != r["memory_answer"] and r["answer"] in r["passage"] for r in cf)
# 6. QA splits by entity group: test = never QA-trained, test_qa_trained = QA-trained, test_heldout = held out
for path in sorted(glob.glob(os.path.join(a, "data", "qa_*.jsonl"))):
    want = {"_train.jsonl": "qa_trained", "_dev.jsonl": "qa_trained", "_test.jsonl": "seen_unqa",
            "_test_qa_trained.jsonl": "qa_trained", "_test_heldout.jsonl": "heldout"}
    w = next(v for suf, v in want.items() if path.endswith(suf) and not (suf == "_test.jsonl" and path.endswith(("_test_qa_trained.jsonl", "_test_heldout.jsonl"))))
    for line in open(path):
        assert json.loads(line)["group"] == w, (path, line[:200])
# 7. reader training data (build_reader_fresh.py): identical in both builds; names in no pretraining document and no
#    real entity's; answers whole spans of their gold passage; never the held-back phrasing family
fresh_files = sorted(glob.glob(os.path.join(a, "data", "reader_fresh_*.jsonl"))) + [os.path.join(a, "corpus", "reader_fresh.jsonl")]
assert len(fresh_files) == 15, fresh_files
for f in fresh_files:
    assert open(f, "rb").read() == open(f.replace(a, os.path.join(work, "b"), 1), "rb").read(), ("reader_fresh differs between builds", f)
fresh_passages = {p["id"]: p for p in map(json.loads, open(os.path.join(a, "corpus", "reader_fresh.jsonl")))}
held_back = [re.compile(re.escape(phr[2]).replace(re.escape("{x}"), ".+?").replace(re.escape("{a}"), ".+?").replace(re.escape("{A}"), ".+?") + "$")
             for _, _, phr in tb.RELATIONS.values()]
n_fresh = 0
for f in fresh_files[:-1]:
    for r in map(json.loads, open(f)):
        n_fresh += 1
        name = fresh_passages[r["gold_passage_id"]]["title"]
        assert name not in words and name.lower() not in real_names, ("a reader-training entity is not fresh", name)
        assert re.search(r"(?<![\w,.])" + re.escape(r["answer"]) + r"(?![\w]|[,.]\d)", fresh_passages[r["gold_passage_id"]]["text"]), r
        assert not any(h.match(r["question"]) for h in held_back), ("a test phrasing in reader training", r["question"])
assert n_fresh == 7 * 340, n_fresh
print(f"reader training data: {n_fresh} questions about {len({p['entity'] for p in fresh_passages.values()})} fresh entities, never in pretraining")
print(f"v2 mixture: {len(v2)} documents, {len(questions)} questions, none in a benchmark phrasing or about a test entity; "
      f"{len(reading)} reading documents with whole-span answers; {len(fic)} fictional entities; skill probes unseen")
print("testbed checks passed")
