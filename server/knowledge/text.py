"""Text similarity without a model: TF-IDF vectors and cosine similarity, standard library only.

Tokens are lower-cased words of two or more letters/digits with a few English stop words and a
crude plural strip, so "Paper jams in tray 2" and "paper jam, tray two" share ``paper``, ``jam``
and ``tray``. Vectors are sparse dicts, L2-normalised, so cosine is a dot product.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping

__all__ = ["Vector", "cosine", "idf", "tokens", "vector"]

Vector = dict[str, float]

_WORD = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
STOP = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "in", "is", "it",
    "its", "of", "on", "or", "the", "this", "to", "was", "were", "with", "after", "before", "when", "then",
    "there", "not", "no", "does", "did", "do",
})  # fmt: skip


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def tokens(text: str) -> list[str]:
    """Words of ``text`` as terms: fault codes like ``E-104`` or ``fuser.temp`` stay whole."""
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in STOP and len(w) > 1]


def idf(documents: Iterable[Iterable[str]]) -> tuple[dict[str, float], int]:
    """Smoothed inverse document frequency per term, and the number of documents."""
    df: Counter[str] = Counter()
    n = 0
    for terms in documents:
        n += 1
        df.update(set(terms))
    return {term: math.log((1 + n) / (1 + count)) + 1.0 for term, count in df.items()}, n


def vector(terms: Iterable[str], weights: Mapping[str, float], default: float) -> Vector:
    """The L2-normalised TF-IDF vector of ``terms``; a term unseen in the corpus gets ``default``
    (the idf of a term in no document), so a query word nobody used counts for the query norm."""
    tf = Counter(terms)
    raw = {term: (1.0 + math.log(count)) * weights.get(term, default) for term, count in tf.items()}
    norm = math.sqrt(sum(v * v for v in raw.values()))
    return {term: v / norm for term, v in raw.items()} if norm else {}


def cosine(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(v * b.get(term, 0.0) for term, v in a.items())
