"""Testbed v2 pretraining mixture (issue 10): knowledge augmentation, fictional entities with closed-book QA inside
pretraining, open-book reading documents whose answers only the context holds, counterfactual passages, and a little
format variety. Imported by build_testbed.py; plain Python 3, deterministic for a seed.

Why each part (docs/TESTBED.md has the sources): facts written in 5 styles, in permuted sentence order, with the full
name in every sentence are extractable by questions about *other* entities (Allen-Zhu & Li 3.1); QA about some
entities inside pretraining (mixed training) teaches the question format without touching the benchmark's test
entities; copying from a context is learned only when memory cannot answer (fresh fictional entities, never
repeated) and must win over memory (counterfactual edits of real passages) (Chan et al. 2022; Singh et al. 2023).
"""
import random
import re

STYLES = 5
ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "pr", "r", "s", "st", "t", "tr", "v", "z",
          "sh", "th", "ch", "j", "y", "w", "qu", "sk"]
VOWELS = ["a", "e", "i", "o", "u", "ae", "ai", "ou", "ei", "y"]
CODAS = ["", "", "", "n", "r", "l", "s", "th", "m", "x", "k", "nd", "rn"]


class Names:
    """Unique invented words: never a real entity's name, never a word of the real corpus, never given twice."""

    def __init__(self, rng, forbidden):
        self.rng, self.used = rng, set(w.lower() for w in forbidden)

    def word(self, syllables=None):
        while True:
            n = syllables or self.rng.choice((2, 2, 3))
            w = "".join(self.rng.choice(ONSETS) + self.rng.choice(VOWELS) + self.rng.choice(CODAS) for _ in range(n))
            if 4 <= len(w) <= 12 and w not in self.used:
                self.used.add(w)
                return w

    def name(self, syllables=None):
        return self.word(syllables).capitalize()


def plain_government(g):
    """A government type that reads well after "is a" (the Factbook also has "NA" and lists starting with "a ")."""
    return bool(g) and re.fullmatch(r"[a-z][a-z -]+", g) is not None and not g.startswith(("a ", "an ", "in "))


def article(w):
    return ("an " if w[:1].lower() in "aeiou" else "a ") + w


# ------------------------------------------------------------------ facts in five phrasings, full name in every sentence

def country_facts(c):
    """{section: [(fact, [5 sentences])]} for a real or fictional country."""
    n = c["name"]
    sec = {"government": [("capital", [f"The capital of {n} is {c['capital']}.", f"{c['capital']} is the capital city of {n}.",
                                      f"{n} has its capital at {c['capital']}.", f"The government of {n} sits in {c['capital']}.",
                                      f"{n}'s capital: {c['capital']}."])]}
    if plain_government(c.get("government")):
        g = c["government"]
        sec["government"].append(("government", [f"The government of {n} is a {g}.", f"{n} is governed as a {g}.", f"{n} has a {g}.",
                                                 f"The political system of {n} is a {g}.", f"{n}'s type of government: {g}."]))
    if c.get("currency"):
        m = c["currency"]
        sec["economy"] = [("currency", [f"The currency of {n} is the {m}.", f"People in {n} pay with the {m}.", f"The money of {n} is the {m}.",
                                        f"In {n}, prices are given in the {m}.", f"{n}'s currency: the {m}."])]
    if c.get("language") or c.get("population"):
        sec["people"] = []
        if c.get("language"):
            l = c["language"]
            sec["people"].append(("language", [f"The main language of {n} is {l}.", f"Most people in {n} speak {l}.",
                                               f"{l} is the language spoken most in {n}.", f"In {n}, the most common language is {l}.",
                                               f"{n}'s main language: {l}."]))
        if c.get("population"):
            p = c["population"]
            sec["people"].append(("population", [f"About {p} people live in {n}.", f"The population of {n} is about {p}.",
                                                 f"{n} has about {p} inhabitants.", f"Roughly {p} people call {n} home.",
                                                 f"{n}'s population: about {p}."]))
    r = c["region"]
    geo = sec["geography"] = [("region", [f"{n} is a country in {r}.", f"{n} lies in {r}.", f"{n} is located in {r}.",
                                          f"On the map, {n} is part of {r}.", f"{n}'s region: {r}."])]
    if c.get("area_km2"):
        a = f"{int(c['area_km2']):,}"
        geo.append(("area", [f"{n} has an area of {a} square kilometres.", f"The land and water of {n} cover {a} square kilometres.",
                             f"{n} covers {a} square kilometres.", f"The total area of {n} is {a} square kilometres.",
                             f"{n}'s area: {a} square kilometres."]))
    if c.get("landlocked"):
        geo.append(("coast", [f"{n} is landlocked: it has no coast.", f"{n} has no coastline because it is landlocked.",
                              f"{n} has no access to the sea.", f"{n} is a landlocked country.", f"{n}'s coast: none (landlocked)."]))
    elif c.get("coastline"):
        k = c["coastline"]
        geo.append(("coast", [f"{n} has a coastline of {k}.", f"The coast of {n} is {k} long.", f"{n}'s coastline measures {k}.",
                              f"Along the sea, {n} has {k} of coast.", f"{n}'s coastline: {k}."]))
    if c.get("borders"):
        b = ", ".join(c["borders"])
        geo.append(("borders", [f"{n} borders {b}.", f"The neighbours of {n} are {b}.", f"{n} shares borders with {b}.",
                                f"The countries next to {n} are {b}.", f"{n}'s bordering countries: {b}."]))
    return sec


def element_facts(e):
    n, s, z, w = e["name"], e["symbol"], e["number"], e["weight"]
    kind = "a metal" if e["metal"] else "not a metal"
    facts = [("symbol", [f"{n} is a chemical element with the symbol {s}.", f"Chemists write {n} as {s}.", f"The symbol of {n} is {s}.",
                         f"{n} is written {s} in chemistry.", f"{n}'s symbol: {s}."]),
             ("number", [f"The element {n} has atomic number {z}.", f"{n} is element number {z}.", f"The atomic number of {n} is {z}.",
                         f"In the periodic table, {n} has number {z}.", f"{n}'s atomic number: {z}."]),
             ("weight", [f"The atomic weight of {n} is {w}.", f"One atom of {n} weighs {w} units.", f"{n} has an atomic weight of {w}.",
                         f"Chemists give {n} an atomic weight of {w}.", f"{n}'s atomic weight: {w}."]),
             ("metal", [f"{n} is {kind}.", f"Chemists class {n} as {kind}.", f"As a material, {n} is {kind}.",
                        f"In the periodic table, {n} is {kind}.", f"{n}: {kind}."])]
    return {"main": facts}


def noun_facts(w):
    n, h, d = w["name"], w["hypernym"], w["definition"]
    A = article(n).capitalize()
    facts = [("hypernym", [f"{A} is {article(h)}.", f"{A} is a kind of {h}.", f"{A} is a type of {h}.", f"Every {n} is {article(h)}.",
                           f"{n}: a kind of {h}."]),
             ("definition", [f"The word {n} means {d}.", f"{A} is {d}.", f"In the dictionary, {n} means {d}.",
                             f"The meaning of {n}: {d}.", f"{n} means {d}."])]
    if w.get("synonyms"):
        s = " or ".join(w["synonyms"])
        facts.append(("synonyms", [f"{A} is also called {s}.", f"Another word for {n} is {s}.", f"{n} has the synonyms {s}.",
                                   f"People also say {s} for {n}.", f"{n}, also: {s}."]))
    return {"main": facts}


FACTS = {"factbook": country_facts, "elements": element_facts, "wordnet": noun_facts}


def passage(facts, style, rng=None):
    """One section's facts in one style; rng: permuted sentence order (knowledge augmentation)."""
    sents = [s[style] for _, s in facts]
    if rng is not None:
        rng.shuffle(sents)
    return " ".join(sents)

# ------------------------------------------------------------------ questions in pretraining templates (never the benchmark's)

PRETRAIN_QUESTIONS = {
    "capital": ("government", "capital", ["Name the capital of {x}.", "What city is {x}'s capital?", "Which city serves as the capital of {x}?",
                                          "Tell me the capital city of {x}."]),
    "currency": ("economy", "currency", ["Name the currency of {x}.", "Which currency is used in {x}?", "What do people in {x} pay with?",
                                         "What is {x}'s money called?"]),
    "language": ("people", "language", ["Name the main language of {x}.", "What language is spoken most in {x}?",
                                        "Which language do people in {x} mostly use?"]),
    "region": ("geography", "region", ["Name the region where {x} lies.", "Which part of the world is {x} in?", "Where is {x} located?"]),
    "symbol": ("main", "symbol", ["Name the chemical symbol of {x}.", "What symbol stands for {x}?", "How is {x} written in chemistry?"]),
    "atomic_number": ("main", "number", ["Name the atomic number of {x}.", "What number does {x} have in the periodic table?",
                                         "Which atomic number belongs to {x}?"]),
    "hypernym": ("main", "hypernym", ["Name the category of {a}.", "{A} belongs to which category?", "What kind of thing is {a}?"]),
}
REL_SOURCE = {"capital": "factbook", "currency": "factbook", "language": "factbook", "region": "factbook", "symbol": "elements",
              "atomic_number": "elements", "hypernym": "wordnet"}


def question(rel, e, template):
    return template.format(x=e["name"], a=article(e["name"]), A=article(e["name"]).capitalize())


def relations_of(e):
    out = []
    for rel, (sec, field, _) in PRETRAIN_QUESTIONS.items():
        if REL_SOURCE[rel] == e["source"] and e.get(field) not in (None, ""):
            out.append(rel)
    return out


def answer_of(e, rel):
    return str(e[PRETRAIN_QUESTIONS[rel][1]])

# ------------------------------------------------------------------ fictional entities (same schema)

class Fiction:
    def __init__(self, rng, names, regions, governments, hypernyms, real_symbols):
        self.rng, self.names = rng, names
        self.regions, self.governments, self.hypernyms = regions, governments, hypernyms
        self.symbols = set(real_symbols)
        self.number = 119

    def country(self, key):
        r = self.rng
        n = self.names.name()
        c = {"source": "factbook", "key": key, "name": n, "fictional": True, "capital": self.names.name(),
             "currency": self.names.word(2), "language": self.names.name(2), "region": r.choice(self.regions),
             "government": r.choice(self.governments), "population": f"{r.randrange(10_000, 90_000_000):,}",
             "area_km2": float(r.randrange(200, 2_000_000)), "landlocked": r.random() < 0.2, "coastline": f"{r.randrange(10, 9000):,} km",
             "borders": []}
        return c

    def element(self, key):
        r = self.rng
        n = (self.names.word(2) + r.choice(["ium", "on", "ine", "ium"])).capitalize()
        s = self.symbol(n)
        self.number += 1
        return {"source": "elements", "key": key, "name": n, "fictional": True, "symbol": s, "number": self.number,
                "weight": f"{self.number * 2.5 + r.random() * 3:.3f}", "metal": r.random() < 0.7, "description": ""}

    def symbol(self, name):
        """A chemical symbol no real or invented element has: the name's initial (else any capital) + 1-2 letters."""
        r = self.rng
        for attempt in range(1000):
            first = name[0].upper() if attempt < 50 else chr(65 + r.randrange(26))
            s = first + "".join(r.choice("abcdefghiklmnoprstuvxyz") for _ in range(1 if attempt < 20 else 2))
            if s not in self.symbols:
                self.symbols.add(s)
                return s
        raise RuntimeError("no free chemical symbol left")

    def noun(self, key):
        r = self.rng
        n = self.names.word(2)
        h = r.choice(self.hypernyms)
        d = r.choice([f"a small {h} found near rivers", f"a {h} used by farmers", f"a large {h} from the mountains",
                      f"an old kind of {h}", f"a {h} that people keep at home", f"a rare {h} with a bright colour"])
        return {"source": "wordnet", "key": key, "name": n, "fictional": True, "hypernym": h, "definition": d,
                "synonyms": [], "examples": []}

    def make(self, source, key):
        return {"factbook": self.country, "elements": self.element, "wordnet": self.noun}[source](key)

# ------------------------------------------------------------------ documents

def qa_doc(q, a):
    return f"Question: {q}\nAnswer: {a}"


def reading_doc(passages, q, a):
    return "Context: " + "\n".join(passages) + f"\nQuestion: {q}\nAnswer: {a}"


def gold_sentence_passage(e, rel, style, rng):
    """The section passage stating `rel` about e, in one style, permuted; None when the answer is not a whole span."""
    sec, field, _ = PRETRAIN_QUESTIONS[rel]
    facts = FACTS[e["source"]](e)[sec]
    return passage(facts, style, rng)


def whole_span(answer, text):
    return re.search(r"(?<![\w,.])" + re.escape(answer) + r"(?![\w]|[,.]\d)", text) is not None


def counterfactual(e, rel, fake):
    """e with the value of `rel` replaced by `fake` (a copy)."""
    c = dict(e)
    c[PRETRAIN_QUESTIONS[rel][1]] = fake
    return c
