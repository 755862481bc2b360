"""Embedded tiny data set: a synthetic English->German-like language pair.

Why synthetic: the tiny profile must run offline on a laptop CPU, yet the mapping must need a real
sequence model. The target differs from the source by word order (verb-final subordinate clauses,
adverb before the object), agreement (article and adjective endings follow gender, number and
definiteness; verbs follow the subject's number) and a fixed lexicon, so word-for-word copying fails.
Files are written in the same layout as the real data set (train/valid/test .en/.de, one sentence a
line, raw untokenised text) and read back by the same loader.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from gapbench.task import generate_once

# English noun -> (German stem, gender, plural suffix)
NOUNS = {
    "dog": ("hund", "m", "e"),
    "cat": ("katze", "f", "n"),
    "child": ("kind", "n", "er"),
    "farmer": ("bauer", "m", "n"),
    "teacher": ("lehrerin", "f", "nen"),
    "horse": ("pferd", "n", "e"),
    "bird": ("vogel", "m", "s"),
    "house": ("haus", "n", "er"),
    "apple": ("apfel", "m", "s"),
    "letter": ("brief", "m", "e"),
    "flower": ("blume", "f", "n"),
    "book": ("buch", "n", "er"),
    "car": ("wagen", "m", "s"),
    "door": ("tuer", "f", "en"),
    "boat": ("boot", "n", "e"),
    "king": ("koenig", "m", "e"),
}
# English verb -> German stem
VERBS = {
    "see": "seh",
    "find": "find",
    "carry": "trag",
    "paint": "mal",
    "buy": "kauf",
    "visit": "besuch",
    "follow": "folg",
    "hear": "hoer",
    "build": "bau",
    "love": "lieb",
}
ADJECTIVES = {
    "big": "gross",
    "small": "klein",
    "old": "alt",
    "young": "jung",
    "red": "rot",
    "green": "gruen",
    "quiet": "leis",
    "happy": "froh",
}
ADVERBS = {"today": "heute", "often": "oft", "again": "wieder", "slowly": "langsam"}
NUMBERS = {"two": "zwei", "three": "drei", "four": "vier", "five": "fuenf", "six": "sechs"}
CONJUNCTIONS = {"because": "weil", "although": "obwohl", "when": "wenn"}
THAT = ("that", "dass")
SAY = {"say": "sag", "know": "weiss", "believe": "glaub"}

DEF_ARTICLE = {"m": "der", "f": "die", "n": "das"}
INDEF_ARTICLE = {"m": "ein", "f": "eine", "n": "ein"}
INDEF_ADJ_ENDING = {"m": "er", "f": "e", "n": "es"}


@dataclass(frozen=True)
class NounPhrase:
    """One noun phrase in both languages plus the number its verb must agree with."""

    en: str
    de: str
    plural: bool


def _noun_phrase(rng: random.Random) -> NounPhrase:
    noun = rng.choice(sorted(NOUNS))
    stem, gender, plural_suffix = NOUNS[noun]
    adj = rng.choice(sorted(ADJECTIVES)) if rng.random() < 0.5 else None
    kind = rng.choice(["def", "indef", "num", "defpl"])
    de_noun = stem.capitalize()
    if kind == "def":
        en = ["the"] + ([adj] if adj else []) + [noun]
        de = [DEF_ARTICLE[gender]] + ([ADJECTIVES[adj] + "e"] if adj else []) + [de_noun]
        return NounPhrase(" ".join(en), " ".join(de), False)
    if kind == "indef":
        article = "an" if (adj or noun)[0] in "aeiou" else "a"
        en = [article] + ([adj] if adj else []) + [noun]
        de_adj = [ADJECTIVES[adj] + INDEF_ADJ_ENDING[gender]] if adj else []
        de = [INDEF_ARTICLE[gender]] + de_adj + [de_noun]
        return NounPhrase(" ".join(en), " ".join(de), False)
    en_plural = "children" if noun == "child" else noun + "s"
    de_plural = de_noun + plural_suffix
    if kind == "num":
        num = rng.choice(sorted(NUMBERS))
        en = [num] + ([adj] if adj else []) + [en_plural]
        de = [NUMBERS[num]] + ([ADJECTIVES[adj] + "e"] if adj else []) + [de_plural]
        return NounPhrase(" ".join(en), " ".join(de), True)
    en = ["the"] + ([adj] if adj else []) + [en_plural]
    de = ["die"] + ([ADJECTIVES[adj] + "en"] if adj else []) + [de_plural]
    return NounPhrase(" ".join(en), " ".join(de), True)


def _conjugate(en_verb: str, de_stem: str, plural: bool) -> tuple[str, str]:
    if plural:
        return en_verb, de_stem + "en"
    consonant_y = en_verb.endswith("y") and en_verb[-2] not in "aeiou"
    en = en_verb[:-1] + "ies" if consonant_y else en_verb + "s"
    de = de_stem if de_stem.endswith("t") or de_stem == "weiss" else de_stem + "t"
    return en, de


def _clause(rng: random.Random, subordinate: bool) -> tuple[list[str], list[str]]:
    """Subject-verb-object clause: V2 in main clauses, verb-final in subordinate ones."""
    subj, obj = _noun_phrase(rng), _noun_phrase(rng)
    verb = rng.choice(sorted(VERBS))
    en_v, de_v = _conjugate(verb, VERBS[verb], subj.plural)
    adv = rng.choice(sorted(ADVERBS)) if rng.random() < 0.4 else None
    en = [subj.en, en_v, obj.en] + ([adv] if adv else [])
    de_adv = [ADVERBS[adv]] if adv else []
    if subordinate:
        de = [subj.de] + de_adv + [obj.de, de_v]
    else:
        de = [subj.de, de_v] + de_adv + [obj.de]
    return en, de


def sentence_pair(rng: random.Random) -> tuple[str, str]:
    """One sentence pair: a main clause, optionally joined to a subordinate or 'that' clause."""
    roll = rng.random()
    if roll < 0.25:
        subj = _noun_phrase(rng)
        verb = rng.choice(sorted(SAY))
        en_v, de_v = _conjugate(verb, SAY[verb], subj.plural)
        en_c, de_c = _clause(rng, subordinate=True)
        en = [subj.en, en_v, THAT[0]] + en_c
        de = [subj.de, de_v, ",", THAT[1]] + de_c
    else:
        en, de = _clause(rng, subordinate=False)
        if roll < 0.6:
            conj = rng.choice(sorted(CONJUNCTIONS))
            en_c, de_c = _clause(rng, subordinate=True)
            en = en + [conj] + en_c
            de = de + [",", CONJUNCTIONS[conj]] + de_c
    en_text = " ".join(en)
    de_text = " ".join(de).replace(" ,", ",")
    return en_text[0].upper() + en_text[1:] + ".", de_text[0].upper() + de_text[1:] + "."


# Version -> split sizes. A new version whenever the content changes (the profile's `dataset` and
# the cache folder carry it). The same seeded stream: v3's train and valid equal v2's.
VERSIONS: dict[int, dict[str, int]] = {
    2: {"train": 4000, "valid": 200, "test": 200},  # tiny
    3: {"train": 4000, "valid": 200, "test": 2000},  # bench: >= 2000 test sentences
}
SPLIT_SIZES = VERSIONS[2]


def write_synthetic(root: Path, seed: int = 0, sizes: dict[str, int] | None = None) -> Path:
    """Write the synthetic corpus into root (idempotent: a finished corpus is left alone)."""
    sizes = sizes or SPLIT_SIZES
    return generate_once(root, (root / "DONE").exists, lambda: _write(root, seed, sizes))


def _write(root: Path, seed: int, sizes: dict[str, int]) -> None:
    done = root / "DONE"
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, n in sizes.items():
        pairs = [sentence_pair(rng) for _ in range(n)]
        for lang, idx in (("en", 0), ("de", 1)):
            tmp = root / f"{split}.{lang}.tmp"
            tmp.write_text("".join(p[idx] + "\n" for p in pairs), encoding="utf-8")
            tmp.replace(root / f"{split}.{lang}")
    done.write_text("ok\n")
