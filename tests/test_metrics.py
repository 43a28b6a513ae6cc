"""Metrics against values computed by hand."""

import math

import pytest

from rag.tools.metrics import (
    answer_contained,
    exact_match,
    hit_at_k,
    ndcg_at_k,
    normalize_answer,
    recall_at_k,
    reciprocal_rank,
    token_f1,
)


def test_normalize_drops_case_punctuation_articles():
    assert normalize_answer("The  Eiffel-Tower, in Paris!") == "eiffeltower in paris"
    assert normalize_answer("An apple a day") == "apple day"


def test_exact_match_any_gold():
    assert exact_match("the Denver Broncos", ["Denver Broncos", "Broncos"]) == 1.0
    assert exact_match("Denver", ["Denver Broncos"]) == 0.0


def test_token_f1_by_hand():
    # pred tokens: denver broncos won; gold: denver broncos -> common 2, p=2/3, r=1, f1=0.8
    assert token_f1("Denver Broncos won", ["Denver Broncos"]) == pytest.approx(0.8)
    assert token_f1("Panthers", ["Denver Broncos", "Panthers"]) == 1.0
    assert token_f1("nothing here", ["Denver"]) == 0.0


def test_answer_contained_on_word_boundaries():
    assert answer_contained("It was the Denver Broncos, in 2016.", ["Denver Broncos"]) == 1.0
    assert answer_contained("1999 and 2000", ["99"]) == 0.0


def test_ndcg_by_hand():
    relevance = {"a": 1.0, "b": 1.0}
    # hits at ranks 1 and 3: dcg = 1 + 1/log2(4) = 1.5; idcg = 1 + 1/log2(3)
    expected = 1.5 / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["a", "x", "b"], relevance, k=10) == pytest.approx(expected)
    assert ndcg_at_k(["x", "y"], relevance, k=10) == 0.0
    assert ndcg_at_k(["a", "b"], relevance, k=10) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "a"], relevance, k=1) == 0.0


def test_recall_hit_mrr_by_hand():
    ranked = ["x", "a", "y", "b"]
    assert recall_at_k(ranked, {"a", "b"}, 2) == 0.5
    assert recall_at_k(ranked, {"a", "b"}, 4) == 1.0
    assert hit_at_k(ranked, {"b"}, 3) == 0.0
    assert hit_at_k(ranked, {"b"}, 4) == 1.0
    assert reciprocal_rank(ranked, {"a", "b"}) == 0.5
    assert reciprocal_rank(ranked, {"b"}, k=3) == 0.0
