"""`score_responses`: the run's quality and side-effect scores for responses generated anywhere.

For users who generate elsewhere (vLLM, an API model, a notebook) and want the numbers a steering run
would give the same texts: the same scorers (`quality_scorers`), one row per response, one column per
score and a `flags` column. Fluency and the word-order test use `model` (the model under test; the
embedded SmolLM2-135M-Instruct by default); `length_ratio` needs a run's baseline and is None here.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from pytest_steer.models import LoadedModel
    from pytest_steer.tasks.base import Case

FINISH_REASONS = ("stop", "length")


def _as_list(name: str, values: Any, kind: type | tuple[type, ...]) -> list[Any]:
    """`values` as a list: a list or tuple, or what pandas and numpy users hold (a Series, an array)."""
    if hasattr(values, "tolist") and not isinstance(values, (str, bytes)):
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        what = "a list of str" if kind is str else f"a list of {getattr(kind, '__name__', kind)}"
        raise TypeError(f"{name} must be {what} (a list, tuple, pandas Series or numpy array), not "
                        f"{type(values).__name__}" + (": pass [text] for one" if isinstance(values, str) else ""))
    out = list(values)
    for i, v in enumerate(out):
        if not isinstance(v, kind):
            what = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise TypeError(f"{name}[{i}] is a {type(v).__name__}, not a {what}")
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"{name}[{i}] holds {v[exc.start:exc.end]!r} at character {exc.start}, a lone "
                                 "surrogate that is not text (a broken decode or a cut emoji); decode the source "
                                 "with errors='replace', or drop the character") from None
    return out


def _checked(prompts: Any, responses: Any, finish_reasons: Any, cases: Any, *, model: Any, quality: Any,
             batch_size: Any, fluency: Any) -> tuple[list[str], list[str], list[str] | None, list[Case] | None]:
    """Every argument check of `score_responses`, cheapest first and all before any model loads; the model
    and a reward-model `quality` are checked as the command line checks them (a near miss of a built-in
    name is a typo; a hub id gets one 5 s question). Returns the lists the scoring reads."""
    import argparse

    from pytest_steer.models import LoadedModel, ModelLoadError, check_source
    from pytest_steer.options import BUILTIN_QUALITY, parse_quality
    from pytest_steer.tasks.base import Case

    responses = _as_list("responses", responses, str)
    prompts = _as_list("prompts", prompts, str)
    finish_reasons = None if finish_reasons is None else _as_list("finish_reasons", finish_reasons, str)
    cases = None if cases is None else _as_list("cases", cases, Case)
    n = len(responses)
    for name, values in (("prompts", prompts), ("finish_reasons", finish_reasons), ("cases", cases)):
        if values is not None and len(values) != n:
            raise ValueError(f"got {n} responses but {len(values)} {name}; pass one per response")
    bad = sorted({f for f in finish_reasons or () if f not in FINISH_REASONS})
    if bad:
        raise ValueError(f"unknown finish_reasons {bad}: use 'stop' (ended on its own) or 'length' (cut at the "
                         "token limit)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"batch_size must be a whole number, got {batch_size!r} ({type(batch_size).__name__})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not isinstance(fluency, bool):
        raise TypeError(f"fluency must be True or False, got {fluency!r}")
    if not isinstance(quality, str):
        raise TypeError(f"quality must be 'offline', 'fluency' or a reward model id or directory, got {quality!r}")
    try:
        quality = parse_quality(quality)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"quality: {exc}") from None
    if quality == "fluency" and not fluency:
        raise ValueError("quality='fluency' is the fluency score: pass fluency=True or another quality")
    if not isinstance(model, (str, LoadedModel)):
        raise TypeError(f"model must be 'embedded', a hub id, a directory or a LoadedModel, not "
                        f"{type(model).__name__}")
    try:
        if isinstance(model, str):
            check_source(model, option="model")
        if quality not in BUILTIN_QUALITY:
            check_source(quality, option="quality")
    except ModelLoadError as exc:
        raise ValueError(str(exc)) from None
    return prompts, responses, finish_reasons, cases


def score_responses(
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    finish_reasons: Sequence[str] | None = None,
    cases: Sequence[Case] | None = None,
    model: str | LoadedModel = "embedded",
    quality: str = "offline",
    batch_size: int = 8,
    fluency: bool = True,
) -> pd.DataFrame:
    """Score `responses` to `prompts` as a steering run would; one row per response.

    `finish_reasons`: "stop" (default) or "length" (cut at the token limit: `truncated`). `cases`: the
    case of each row, for what it asks beyond the prompt (IFEval's `language` argument); without them
    the prompt is the case. `model`: "embedded", a hub id or directory, or a `LoadedModel`. `quality`:
    as `--steer-quality` ("offline", "fluency" or a reward model). Columns: key, prompt, response,
    finish_reason, then every score by name (the side effects, then `quality`, plus `reward` for a
    reward model) and `flags` (a list of labels such as "repetition" or "copied").

    The offline `quality` judges damage (no answer of its own, loops, word salad, drift off topic, the wrong
    language, refusals, an answer that stops mid-sentence), wherever in the response it starts: a sound
    answer scores 1 whatever its length, format or language. It cannot say which of two sound answers a
    person prefers; for that pass a reward model as `quality`. `fluency=False` skips
    the fluency score (None): the costliest one, not part of the offline headline, and of little
    meaning when `model` did not write the responses. Bad input raises before any model loads. Any length
    has a bounded cost: fluency reads at most 2,048 response tokens (less where the model's context ends
    first) and flags the row "over budget"; the other scores read windows of the whole text.
    """
    import pandas as pd

    from pytest_steer.methods.base import BASELINE_CONFIG
    from pytest_steer.metrics.scorers import SideEffectScorer, quality_scorers
    from pytest_steer.models import load_model
    from pytest_steer.scores import Sample, metrics_of
    from pytest_steer.tasks.base import Case

    prompts, responses, finish_reasons, cases = _checked(prompts, responses, finish_reasons, cases, model=model,
                                                         quality=quality, batch_size=batch_size, fluency=fluency)
    n = len(responses)
    loaded = load_model(model) if isinstance(model, str) else model
    scorers = quality_scorers(quality, loaded, batch_size=batch_size)
    for s in scorers:
        if isinstance(s, SideEffectScorer):
            s.with_fluency = fluency
    for s in scorers:
        s.check()
    tok = loaded.tokenizer
    case_list = list(cases) if cases is not None else [Case(f"row-{i}", p) for i, p in enumerate(prompts)]
    finishes = list(finish_reasons) if finish_reasons is not None else ["stop"] * n
    samples = [Sample(c, BASELINE_CONFIG, p, r, len(tok(r, add_special_tokens=False)["input_ids"]), f)
               for c, p, r, f in zip(case_list, prompts, responses, finishes, strict=True)]
    names = [m.name for m in metrics_of(scorers)]
    columns: dict[str, list[Any]] = {
        "key": [c.key for c in case_list], "prompt": list(prompts), "response": list(responses),
        "finish_reason": finishes,
    }
    columns.update({name: [None] * n for name in names})
    flags: list[list[str]] = [[] for _ in range(n)]
    for s in scorers:
        for i, score in enumerate(s.score(samples)):
            for name, value in score.values.items():
                columns[name][i] = value
            flags[i] += list(score.details.get("flags", ()))
    frame = pd.DataFrame(columns)
    frame[names] = frame[names].astype(float)
    frame["flags"] = flags
    return frame
