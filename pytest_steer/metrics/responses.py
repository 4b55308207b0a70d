"""`score_responses`: the run's quality and side-effect scores for responses generated anywhere.

For users who generate elsewhere (vLLM, an API model, a notebook) and want the numbers a steering run
would give the same texts: the same scorers (`quality_scorers`), one row per response, one column per
score and a `flags` column. Fluency and the word-order test use `model` (the model under test; the
embedded SmolLM2-135M-Instruct by default); `length_ratio` needs a run's baseline and is None here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from pytest_steer.models import LoadedModel
    from pytest_steer.tasks.base import Case

FINISH_REASONS = ("stop", "length")


def _check(name: str, values: Sequence[Any] | None, n: int, kind: type | tuple[type, ...]) -> None:
    if values is None:
        return
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a list, not {type(values).__name__}")
    if len(values) != n:
        raise ValueError(f"got {n} responses but {len(values)} {name}; pass one per response")
    for i, v in enumerate(values):
        if not isinstance(v, kind):
            what = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise TypeError(f"{name}[{i}] is a {type(v).__name__}, not a {what}")


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
    reward model) and `flags` (a list of labels such as "repetition" or "copied"). `fluency=False` skips
    the fluency score (None): the costliest one, not part of the offline headline, and of little
    meaning when `model` did not write the responses. Bad input raises before any model loads.
    """
    import pandas as pd

    from pytest_steer.methods.base import BASELINE_CONFIG
    from pytest_steer.metrics.quality import FLUENCY, SideEffectScorer, quality_scorers
    from pytest_steer.models import load_model
    from pytest_steer.scores import Sample, metrics_of
    from pytest_steer.tasks.base import Case

    n = len(responses)
    _check("responses", responses, n, str)
    _check("prompts", prompts, n, str)
    _check("finish_reasons", finish_reasons, n, str)
    _check("cases", cases, n, Case)
    bad = sorted({f for f in finish_reasons or () if f not in FINISH_REASONS})
    if bad:
        raise ValueError(f"unknown finish_reasons {bad}: use 'stop' (ended on its own) or 'length' (cut at the "
                         "token limit)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if quality == FLUENCY and not fluency:
        raise ValueError("quality='fluency' is the fluency score: pass fluency=True or another quality")
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
