"""The offline headline quality on the pair set (tests/quality_pairs.py), scored end to end by
`score_responses` on the embedded model: every failure mode ranks below the genuine answer and is
flagged, and formatting alone moves it little. (Which of two sound answers a person prefers is a reward
model's question; tests/test_quality_real.py checks the headline against people on real pairs.)
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from pytest_steer.metrics.measures import SUBSTANCE_WEIGHT
from tests.quality_pairs import FORMATS, MODES, pair_set

#: the shares the issue asks for: each failure mode below the genuine answer, formats within 10%
MODE_SHARE, FORMAT_SHARE, FORMAT_BAND = 0.95, 0.90, 0.10


@pytest.fixture(scope="module")
def scored(embedded: Any) -> pd.DataFrame:
    """The pair set scored in one call; a `kind` column says what each row is."""
    from pytest_steer import score_responses

    items = pair_set(greedy=False)
    frame = score_responses([i.case.prompt for i in items], [i.response for i in items],
                            finish_reasons=[i.finish_reason for i in items], cases=[i.case for i in items],
                            model=embedded, batch_size=16, fluency=False)
    return frame.assign(kind=[i.kind for i in items])


def _against_genuine(scored: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Rows of `kind` with the same case's genuine quality beside them (`genuine`)."""
    genuine = scored[scored["kind"] == "genuine"].set_index("key")["quality"]
    rows = scored[scored["kind"] == kind]
    return rows.assign(genuine=rows["key"].map(genuine).to_numpy())


@pytest.mark.parametrize("mode", MODES)
def test_genuine_answer_ranks_above_each_failure_mode(scored: pd.DataFrame, mode: str) -> None:
    rows = _against_genuine(scored, mode)
    assert len(rows) >= (5 if mode == "refusal in language" else 30)  # only the cases that ask for a language
    wins = rows["genuine"] > rows["quality"]
    assert wins.mean() >= MODE_SHARE, rows.loc[~wins, ["key", "quality", "genuine"]].to_string()


@pytest.mark.parametrize("name", FORMATS)
def test_formatting_alone_moves_quality_little(scored: pd.DataFrame, name: str) -> None:
    rows = _against_genuine(scored, f"format: {name}")
    assert len(rows) >= 30
    ratio = rows["quality"] / rows["genuine"]
    within = (ratio - 1).abs() <= FORMAT_BAND
    assert within.mean() >= FORMAT_SHARE, rows.loc[~within, ["key", "quality", "genuine"]].to_string()


def test_genuine_answers_score_high_and_carry_no_flags(scored: pd.DataFrame) -> None:
    genuine = scored[scored["kind"] == "genuine"]
    assert genuine["quality"].median() >= 1 - SUBSTANCE_WEIGHT and genuine["quality"].min() > 0.5
    assert genuine["flags"].map(len).sum() == 0, genuine.loc[genuine["flags"].map(len) > 0, ["key", "flags"]]


@pytest.mark.parametrize(("mode", "flag"), [("loop", "repetition"), ("prompt copied", "copied"),
                                            ("instruction copied", "copied"), ("refusal", "refusal"),
                                            ("word salad", "scrambled"), ("wrong language", "wrong language"),
                                            ("content-free", "no answer"), ("unfinished", "unfinished"),
                                            ("answer then loop", "repetition"),
                                            ("prompt paraphrased", "no answer"), ("apology refusal", "refusal"),
                                            ("refusal in language", "refusal")])
def test_failure_modes_are_flagged(scored: pd.DataFrame, mode: str, flag: str) -> None:
    rows = scored[scored["kind"] == mode]
    assert rows["flags"].map(lambda f: flag in f).mean() >= 0.9, rows[["key", "flags"]].to_string()


def test_scores_do_not_depend_on_batch_partners(scored: pd.DataFrame, embedded: Any) -> None:
    from pytest_steer import score_responses

    rows = scored[(scored["key"] == "steer-fw-02") & scored["kind"].isin(["genuine", "loop", "word salad"])]
    alone = score_responses(list(rows["prompt"]), list(rows["response"]), model=embedded, batch_size=1,
                            fluency=False)
    for name in ("quality", "word_order", "coherence", "diversity", "content"):
        assert alone[name].to_numpy() == pytest.approx(rows[name].to_numpy(), rel=1e-3, abs=1e-4), name


def test_degenerate_text_and_truncation(scored: pd.DataFrame, embedded: Any) -> None:
    """Single-token loops score below every genuine answer; a cut answer is flagged, not marked down."""
    from pytest_steer import score_responses

    genuine = scored[scored["kind"] == "genuine"].set_index("key")
    sentence = "The sky is blue because sunlight is scattered by the air."
    texts = {"steer-fw-05": "1." * 60, "steer-end-06": "the " * 60, "steer-hl-02": "*highlighted part* is " * 20,
             "steer-hl-03": " ".join([sentence] * 8)}
    keys, responses = [*texts, "steer-fw-01"], [*texts.values(), genuine.at["steer-fw-01", "response"]]
    frame = score_responses([genuine.at[k, "prompt"] for k in keys], responses,
                            finish_reasons=["stop"] * len(texts) + ["length"], model=embedded)
    assert (frame["quality"].iloc[:-1] < genuine["quality"].min()).all(), frame[["key", "quality"]]
    assert frame["flags"].iloc[:-1].map(lambda f: "repetition" in f).all()
    cut = frame.iloc[-1]
    assert cut["truncated"] == 1.0 and cut["flags"] == ["truncated"]
    assert cut["quality"] == pytest.approx(genuine.at["steer-fw-01", "quality"], rel=1e-3)


def test_stored_greedy_answers_are_the_models_own(embedded: Any) -> None:
    """tests/data/greedy_responses.jsonl is what the embedded model generates greedily (two cases regenerated)."""
    import json

    from pytest_steer.generation import GenerationEngine, GenerationRequest, GenerationSettings
    from pytest_steer.methods.base import BASELINE_CONFIG
    from tests.quality_pairs import GREEDY, GREEDY_TOKENS

    stored = [json.loads(line) for line in GREEDY.read_text("utf-8").splitlines()][:2]
    cases = {i.case.key: i.case for i in pair_set(greedy=False)}
    engine = GenerationEngine(embedded.model, embedded.tokenizer, batch_size=8,
                              settings=GenerationSettings(max_new_tokens=GREEDY_TOKENS, do_sample=False))
    gens = engine.generate([GenerationRequest(cases[r["key"]], BASELINE_CONFIG, 0) for r in stored])
    assert [(g.text, g.finish_reason) for g in gens] == [(r["response"], r["finish_reason"]) for r in stored]
