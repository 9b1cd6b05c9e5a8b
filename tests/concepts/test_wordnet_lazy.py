"""The lazily parsed WordNet (concepts/wordnet_db.py) answers exactly as wn's eager one.

wn keeps its synsets in process-wide builtins, so each side runs in its own interpreter and
prints a fingerprint of what the concept sources, antonym and blocklist checks read."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("wn")

PROBE = r"""
import hashlib, json, sys
if sys.argv[1] == "lazy":
    from conceptlens.concepts.wordnet_db import wordnet, LazySynsets
    import builtins
    wn = wordnet()
    assert isinstance(builtins._synset_offset_cache["n"], LazySynsets)
else:
    from wn import WordNet
    wn = WordNet()

def show(s):
    return [s.name(), s.definition(), s.lexname(), s.lemma_names(), s.examples(),
            sorted(h.name() for h in s.hypernyms()), sorted(h.name() for h in s.hyponyms()),
            sorted(p.name() for p in s.part_meronyms()), sorted(p.name() for p in s.substance_meronyms()),
            sorted(p.name() for p in s.member_holonyms()),
            sorted(a.name() for l in s.lemmas() for a in l.antonyms()),
            sorted(d.name() for d in s.usage_domains()), sorted(d.name() for d in s.topic_domains())]

out = {}
for word in ["boot", "shoe", "sandal", "trouser", "coat", "dress", "bag", "shirt", "sneaker",
             "pullover", "ankle", "heel", "lace", "strap", "sole", "red", "wet", "long", "bitch",
             "nigger", "shoes", "running", "quickly", "go"]:
    for pos in [None, "n", "a", "s", "v", "r"]:
        out[f"{word}/{pos}"] = [show(s) for s in wn.synsets(word, pos)]
out["synset"] = show(wn.synset("physical_entity.n.01"))
out["offset"] = show(wn.synset_from_pos_and_offset("n", 2084071))
out["sat"] = show(wn.synset_from_pos_and_offset("s", wn.synsets("wet", "s")[0].offset()))
for pos in ["n", "v", "a", "s", "r"]:
    names = [s.name() for s in wn.all_synsets(pos)]
    out[f"all/{pos}"] = [len(names), hashlib.sha256("\n".join(names).encode()).hexdigest()]
out["paths"] = [[x.name() for x in p] for p in wn.synset("boot.n.01").hypernym_paths()]
out["same object"] = wn.synsets("boot", "n")[0] is wn.synset("boot.n.01")
print(json.dumps(out))
"""


def _probe(kind: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, kind], capture_output=True, text=True,
                          timeout=300, check=True)
    return json.loads(done.stdout)


def test_lazy_wordnet_answers_as_the_eager_one():
    eager, lazy = _probe("eager"), _probe("lazy")
    assert eager["all/n"][0] == 82115  # WordNet 3.0's noun synsets: the probe saw the real database
    assert eager["same object"] and lazy["same object"]
    for key in eager:
        assert lazy[key] == eager[key], key


def test_line_index_finds_lines_and_refuses_what_slicing_would_read_differently():
    from conceptlens.concepts.wordnet_db import _line_starts

    good = b"  1 licence\r\n00000012 03 n 01 entity 0 000 | x\r\n00000047 03 s 01 wet 0 000 | y\r\n"
    assert _line_starts(good) == {"n": {12: 13}, "s": {47: 48}}
    assert _line_starts(good.replace(b"00000047", b"00000012").replace(b" s ", b" n ")) is None
    assert _line_starts(good.replace(b"licence", b"lic\rence")) is None
