"""The quality pair set: genuine answers against failure modes and format-only variants built from them.

tests/data/coherent_responses.jsonl holds hand-written answers (40-60 words; the cases that ask for
another language are answered in it, and carry an `english` answer: the wrong language) to 31 of the
embedded cases. From each answer and its case, `pair_set` builds mechanically:

- failure modes, each of which a good headline must rank below the genuine answer: the prompt copied
  back, the instruction copied back, a refusal, a content-free answer, a loop of the first sentence to
  the answer's length, word salad (the words shuffled; characters in scripts without spaces), an
  off-topic answer (the genuine answer to another case), the first 12 words (24 characters in scripts
  without spaces) alone, and the wrong language (the `english` answer where another language was
  asked for, else the answer to one of the other-language cases);
- format-only variants, which must score within 10% of the answer: markdown emphasis on sentence
  openings, a bullet per sentence, `**Step n:**` sections, the answer in capitals, and the answer
  with its markup removed;
- the embedded model's own greedy answer (tests/data/greedy_responses.jsonl, 96 new tokens as
  `make eval` generates; `python -m tests.quality_pairs` rewrites it), which a complete hand-written
  answer should beat.

Used by tests/test_quality_pairs.py and bench/bench_quality.py.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from pytest_steer.tasks import Case, load_cases

DATA = Path(__file__).parent / "data"
ANSWERS = DATA / "coherent_responses.jsonl"
GREEDY = DATA / "greedy_responses.jsonl"
GREEDY_TOKENS = 96
SENTENCE_END = re.compile(r"(?<=[^\d\s][.!?])\s+|(?<=[。！？।])\s*|\n+")

MODES = ("prompt copied", "instruction copied", "refusal", "content-free", "loop", "word salad", "off topic",
         "unfinished", "wrong language")
FORMATS = ("emphasis", "bullets", "numbered", "capitals", "no markup")
GREEDY_KIND = "model greedy"
_REFUSALS = ("I'm sorry, but I can't help with that.",
             "I'm sorry, but I cannot help with this request. {task}",
             "As an AI language model, I am unable to do that. {task}",
             "I can't assist with that request.")
_CONTENT_FREE = ("Sure, here is an explanation.", "Certainly! Here is my answer to your request.",
                 "Of course. I hope this helps!", "Sure! Here you go.")


@dataclass(frozen=True)
class Item:
    """One response to score: `kind` is "genuine", a mode, "format: <name>" or `GREEDY_KIND`."""

    case: Case
    kind: str
    response: str
    finish_reason: str = "stop"


def sentences(text: str) -> list[str]:
    return [part.strip() for part in SENTENCE_END.split(text) if part and part.strip()]


def _spaced(text: str) -> bool:
    return len(text.split()) >= 10


def _task(case: Case) -> str:
    """The prompt without its instruction sentences."""
    text = case.prompt
    for instruction in case.data.get("instructions") or ():
        text = text.replace(instruction, "")
    return " ".join(text.split())


def failure_modes(case: Case, answer: str, index: int, others: list[str], foreign: list[str],
                  english: str | None) -> dict[str, str]:
    """Every failure mode of `answer` to `case`; `others` are the answers to the other cases (for off topic),
    `foreign` the answers in other languages, `english` this answer in English when another was asked for."""
    words = answer.split()
    first = sentences(answer)[0]
    loop = " ".join([first] * (len(answer) // max(1, len(first)) + 2))
    rng = random.Random(case.key)
    if _spaced(answer):
        salad_words = words[:]
        rng.shuffle(salad_words)
        salad, unfinished = " ".join(salad_words), " ".join(words[:12])
        loop = " ".join(loop.split()[: len(words)])
    else:
        chars = list(answer)
        rng.shuffle(chars)
        salad, unfinished = "".join(chars), answer[:24]
        loop = loop[: len(answer)]
    return {
        "prompt copied": case.prompt,
        "instruction copied": (case.data.get("instructions") or (case.prompt,))[0],
        "refusal": _REFUSALS[index % len(_REFUSALS)].format(task=_task(case)),
        "content-free": _CONTENT_FREE[index % len(_CONTENT_FREE)],
        "loop": loop,
        "word salad": salad,
        "off topic": others[(index + 7) % len(others)],
        "unfinished": unfinished,
        "wrong language": english if english is not None else foreign[index % len(foreign)],
    }


def _emphasis(sentence: str) -> str:
    words = sentence.split()
    return f"**{' '.join(words[:3])}** {' '.join(words[3:])}".strip()


def format_variants(answer: str) -> dict[str, str]:
    """The same answer with formatting only changed (markup added or removed, capitals)."""
    parts = sentences(answer)
    return {
        "emphasis": " ".join(_emphasis(s) if i % 2 == 0 else s for i, s in enumerate(parts)),
        "bullets": "\n".join(f"- {s}" for s in parts),
        "numbered": "\n".join(f"**Step {i + 1}:** {s}" for i, s in enumerate(parts)),
        "capitals": answer.upper(),
        "no markup": re.sub(r"[*_#`]", "", answer),
    }


def load_answers() -> list[dict[str, str]]:
    return [json.loads(line) for line in ANSWERS.read_text("utf-8").splitlines() if line.strip()]


def pair_set(*, greedy: bool = True) -> list[Item]:
    """Every item of the pair set, genuine answers first within each case."""
    cases = {c.key: c for c in load_cases()}
    rows = load_answers()
    answers = [r["response"] for r in rows]
    foreign = [r["response"] for r in rows if r["key"].startswith("steer-lang-")]  # the other-language answers
    own = {}
    if greedy:
        own = {r["key"]: r for r in map(json.loads, GREEDY.read_text("utf-8").splitlines()) if r}
    items: list[Item] = []
    for i, row in enumerate(rows):
        case, answer = cases[row["key"]], row["response"]
        items.append(Item(case, "genuine", answer))
        others = answers[:i] + answers[i + 1:]
        modes = failure_modes(case, answer, i, others, [f for f in foreign if f != answer], row.get("english"))
        items += [Item(case, mode, text) for mode, text in modes.items()]
        items += [Item(case, f"format: {name}", text) for name, text in format_variants(answer).items()]
        if greedy:
            g = own[row["key"]]
            items.append(Item(case, GREEDY_KIND, g["response"], g["finish_reason"]))
    return items


def write_greedy() -> None:
    """Regenerate tests/data/greedy_responses.jsonl: the embedded model's greedy answers to the answered cases."""
    from pytest_steer.generation import GenerationEngine, GenerationRequest, GenerationSettings
    from pytest_steer.methods.base import BASELINE_CONFIG
    from pytest_steer.models import load_model

    cases = {c.key: c for c in load_cases()}
    model = load_model()
    engine = GenerationEngine(model.model, model.tokenizer, batch_size=8,
                              settings=GenerationSettings(max_new_tokens=GREEDY_TOKENS, do_sample=False))
    gens = engine.generate([GenerationRequest(cases[r["key"]], BASELINE_CONFIG, 0) for r in load_answers()])
    GREEDY.write_text("".join(json.dumps({"key": g.request.case.key, "response": g.text,
                                          "finish_reason": g.finish_reason}, ensure_ascii=False) + "\n"
                              for g in gens), "utf-8")


if __name__ == "__main__":
    write_greedy()
