"""The pure parts of the knowledge base: tokens, TF-IDF cosine, telemetry z-scores and
signature similarity (server/knowledge/text.py, signature.py)."""

from __future__ import annotations

import pytest

from server.knowledge import text
from server.knowledge.signature import mean_signature, similarity, z_scores


def test_tokens_keep_fault_codes_whole_and_fold_plurals() -> None:
    assert text.tokens("Paper jams in Tray 2; code E-104, fuser.temp high") == [
        "paper", "jam", "tray", "code", "e-104", "fuser.temp", "high",
    ]  # fmt: skip


def test_tfidf_cosine_prefers_shared_rare_terms() -> None:
    docs = [
        text.tokens(d) for d in ("paper jam tray", "printer noise", "printer paper faded", "printer slow")
    ]
    weights, n = text.idf(docs)
    unseen = text.vector(["zzz"], weights, 99.0)
    vectors = [text.vector(d, weights, 1.0) for d in docs]
    query = text.vector(text.tokens("the printer has a paper jam"), weights, 1.0)
    scores = [text.cosine(query, v) for v in vectors]
    assert n == 4
    assert scores.index(max(scores)) == 0  # "jam" is rare, "printer" is everywhere
    assert text.cosine(vectors[0], vectors[0]) == pytest.approx(1.0)
    assert text.cosine(query, unseen) == 0
    assert text.vector([], weights, 1.0) == {}


def test_z_scores_against_the_devices_own_baseline() -> None:
    # (metric, n_base, sum_base, sumsq_base, n_window, sum_window)
    rows = [
        ("hot", 10, 600.0, 36010.0, 2, 140.0),  # mean 60, std 1 → window 70: z = 10
        ("steady", 10, 600.0, 36010.0, 2, 121.0),  # window 60.5: z = 0.5, normal
        ("few", 3, 180.0, 10800.0, 1, 99.0),  # too few baseline samples
        ("flat", 10, 20.0, 40.0, 1, 2.1),  # constant 2.0: spread 1 % of the mean → z = 5
    ]
    assert z_scores(rows) == {"hot": 10.0, "flat": pytest.approx(5.0)}


def test_signature_similarity_counts_same_direction_only() -> None:
    assert similarity({"t": 4.0}, {"t": 8.0}) == pytest.approx(1.0)
    assert similarity({"t": 4.0}, {"t": -4.0}) == 0
    assert similarity({"t": 4.0, "p": 4.0}, {"t": 4.0}) == pytest.approx(2**-0.5)
    assert similarity({}, {"t": 1.0}) == 0
    assert mean_signature([{"t": 4.0, "p": 2.0}, {"t": 6.0}, {"t": 5.0}]) == {"t": 5.0}
