"""The offline headline on real answers and real people (tests/data, Apache-2.0):

- GPT-4's IFEval answers that Google's checker labels as following every instruction are not damage:
  per instruction type, at most 10% of them score below 0.5, whatever their length, format or language;
- failure modes built mechanically from those answers (tests/quality_pairs.py) rank below them;
- on PandaLM's 794 answer pairs with a unanimous human preference, the headline agrees with the people
  more often than "prefer the longer answer" does (67.2%).

These rows are a development half: the score is also measured on halves that are not here, so its rules
are set by what a failure is, not fitted to these rows.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from tests.quality_pairs import MODES, agreement, gpt4_answers, gpt4_pair_set, pandalm_pairs

#: the issue's bar: per type with at least `MIN_PER_TYPE` compliant answers, at most this share below 0.5
BELOW_HALF_SHARE, MIN_PER_TYPE = 0.10, 5
MODE_SHARE = 0.95
#: a deterministic subset keeps the suite in minutes: every `PAIR_STEP`-th compliant answer builds modes, and
#: every answer to a case that asks for another language (bench/bench_quality.py builds them from all)
PAIR_STEP = 6


def _score(embedded: Any, prompts: list[str], responses: list[str], cases: list[Any] | None = None) -> pd.DataFrame:
    from pytest_steer import score_responses

    return score_responses(prompts, responses, cases=cases, model=embedded, batch_size=32, fluency=False)


@pytest.fixture(scope="module")
def compliant(embedded: Any) -> pd.DataFrame:
    """Every compliant GPT-4 answer, scored with its case (so the language it asks for is known)."""
    rows = [(case, answer) for case, answer, ok in gpt4_answers() if ok]
    frame = _score(embedded, [c.prompt for c, _ in rows], [a for _, a in rows], [c for c, _ in rows])
    return frame.assign(types=[c.instruction_id_list for c, _ in rows])


def test_compliant_answers_are_not_damage(compliant: pd.DataFrame) -> None:
    per_type = compliant.explode("types").groupby("types")["quality"]
    table = pd.DataFrame({"n": per_type.size(), "below": per_type.apply(lambda q: (q < 0.5).mean())})
    judged = table[table["n"] >= MIN_PER_TYPE]
    assert len(judged) >= 15  # the bar is checked on most IFEval types, not a few
    over = judged[judged["below"] > BELOW_HALF_SHARE]
    low = compliant[compliant["quality"] < 0.5]
    assert over.empty, f"{over}\n{low[['key', 'quality', 'flags']].to_string()}"


@pytest.fixture(scope="module")
def gpt4_pairs(embedded: Any, compliant: pd.DataFrame) -> pd.DataFrame:
    """The failure modes of every `PAIR_STEP`-th compliant answer, each row with its genuine answer's quality."""
    items = [i for i in gpt4_pair_set() if i.kind != "genuine"]
    keys = set(list(dict.fromkeys(i.case.key for i in items))[::PAIR_STEP])
    keys |= {i.case.key for i in items if i.kind == "refusal in language"}
    items = [i for i in items if i.case.key in keys]
    frame = _score(embedded, [i.case.prompt for i in items], [i.response for i in items], [i.case for i in items])
    genuine = compliant.set_index("key")["quality"]
    answers = compliant.set_index("key")["response"]
    return frame.assign(kind=[i.kind for i in items], genuine=frame["key"].map(genuine).to_numpy(),
                        genuine_response=frame["key"].map(answers).to_numpy())


#: word salad is judged only in languages the model under test knows (metrics/scorers.py: `order_mark`)
SALAD_MODES = ("word salad", "salad after opening")


@pytest.mark.parametrize("mode", MODES)
def test_genuine_gpt4_answer_ranks_above_each_failure_mode(gpt4_pairs: pd.DataFrame, embedded: Any,
                                                           mode: str) -> None:
    from pytest_steer.metrics.measures import detect_language
    from pytest_steer.metrics.scorers import Fluency

    rows = gpt4_pairs[gpt4_pairs["kind"] == mode]
    if mode in SALAD_MODES:
        fluency = Fluency(embedded.model, embedded.tokenizer)
        genuine = dict(zip(gpt4_pairs["key"], gpt4_pairs["genuine_response"], strict=False))
        rows = rows[[fluency.order_mark(detect_language(genuine[k])) is not None for k in rows["key"]]]
    assert len(rows) >= (10 if mode == "refusal in language" else 30)
    wins = rows["genuine"] > rows["quality"]
    assert wins.mean() >= MODE_SHARE, rows.loc[~wins, ["key", "quality", "genuine", "flags"]].to_string()


def test_headline_agrees_with_people_more_often_than_length(embedded: Any) -> None:
    pairs = pandalm_pairs()
    prompts = [str(p["prompt"]) for p in pairs]
    first, second = [str(p["response_1"]) for p in pairs], [str(p["response_2"]) for p in pairs]
    frame = _score(embedded, prompts + prompts, first + second)
    quality = frame["quality"].tolist()
    preferred = [int(str(p["preferred"])) for p in pairs]
    headline = agreement(quality[: len(pairs)], quality[len(pairs):], preferred)
    longer = agreement([float(len(r.split())) for r in first], [float(len(r.split())) for r in second], preferred)
    assert headline > longer, (headline, longer)
