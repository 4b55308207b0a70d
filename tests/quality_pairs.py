"""The quality pair set: genuine answers against failure modes and format-only variants built from them.

tests/data/coherent_responses.jsonl holds hand-written answers (40-60 words; the cases that ask for
another language are answered in it, and carry an `english` answer: the wrong language) to 31 of the
embedded cases. From each answer and its case, `pair_set` builds mechanically:

- failure modes, each of which a good headline must rank below the genuine answer: the prompt copied
  back, the instruction copied back, a refusal, a content-free answer, a loop of the first sentence (at
  least three times, to the answer's length), word salad (the words shuffled; characters in scripts
  without spaces), an off-topic answer (the genuine answer to another case), the answer stopped
  mid-sentence after at most 12 words (24 characters in scripts without spaces; a short complete
  answer is no damage), the wrong language (the `english` answer where another language was asked
  for, else the answer to one of the other-language cases), a fluent opening (the first 40 words, at
  most half) followed by the rest shuffled, the answer followed by a loop of its first sentence, the
  prompt restated with no answer, an apology-led refusal, and a refusal in the language the case asks
  for (those cases only);
- format-only variants, which must score within 10% of the answer: markdown emphasis on sentence
  openings, a bullet per sentence, `**Step n:**` sections, the answer in capitals, and the answer
  with its markup removed;
- the embedded model's own greedy answer (tests/data/greedy_responses.jsonl, 96 new tokens as
  `make eval` generates; `python -m tests.quality_pairs` rewrites it), which bench/bench_quality.py
  reports (which of two sound answers is better is a reward model's question, not the headline's).

`gpt4_pair_set` builds the same failure modes from GPT-4's IFEval answers that Google's checker labels as
compliant (tests/data/ifeval-gpt4-dev); `pandalm_pairs` and `agreement` serve the human-preference check.
Used by tests/test_quality_pairs.py, tests/test_quality_real.py and bench/bench_quality.py.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from pytest_steer.tasks import INSTRUCTIONS, Case, load_cases

DATA = Path(__file__).parent / "data"
ANSWERS = DATA / "coherent_responses.jsonl"
GREEDY = DATA / "greedy_responses.jsonl"
GREEDY_TOKENS = 96
SENTENCE_END = re.compile(r"(?<=[^\d\s][.!?])\s+|(?<=[。！？।])\s*|\n+")

MODES = ("prompt copied", "instruction copied", "refusal", "content-free", "loop", "word salad", "off topic",
         "unfinished", "wrong language", "salad after opening", "answer then loop", "prompt paraphrased",
         "apology refusal", "refusal in language")
FORMATS = ("emphasis", "bullets", "numbered", "capitals", "no markup")
GREEDY_KIND = "model greedy"
_REFUSALS = ("I'm sorry, but I can't help with that.",
             "I'm sorry, but I cannot help with this request. {task}",
             "As an AI language model, I am unable to do that. {task}",
             "I can't assist with that request.")
_APOLOGIES = ("I apologize, but I cannot complete this request.",
              "Sorry, I can't help with that.",
              "Unfortunately, I'm not able to write this for you.",
              "I apologize, but I'm unable to assist with this. {task}")
#: "I'm sorry, I can't do that" as a speaker of each language IFEval asks for would write it
REFUSALS_BY_LANGUAGE = {
    "es": "Lo siento, pero no puedo ayudarte con esa solicitud.", "pt": "Desculpe, mas não posso ajudar com isso.",
    "fr": "Je suis désolé, mais je ne peux pas répondre à cette demande.",
    "de": "Es tut mir leid, aber ich kann Ihnen dabei nicht helfen.",
    "it": "Mi dispiace, ma non posso aiutarti con questo.",
    "ru": "Извините, но я не могу выполнить эту просьбу.", "uk": "Вибачте, але я не можу допомогти з цим.",
    "bg": "Съжалявам, но не мога да помогна с това.", "pl": "Przepraszam, ale nie mogę pomóc w tej sprawie.",
    "fi": "Valitettavasti en voi auttaa tässä asiassa.", "sw": "Samahani, siwezi kukusaidia na ombi hilo.",
    "vi": "Xin lỗi, tôi không thể giúp bạn với yêu cầu này.", "ar": "عذرًا، لا أستطيع المساعدة في هذا الطلب.",
    "fa": "متأسفم، نمی‌توانم در این مورد کمک کنم.", "ur": "معذرت، میں اس میں مدد نہیں کر سکتا۔",
    "he": "סליחה, אני לא יכול לעזור בבקשה הזו.", "hi": "क्षमा करें, मैं इस अनुरोध में मदद नहीं कर सकता।",
    "ne": "माफ गर्नुहोस्, म यसमा मद्दत गर्न सक्दिन।", "mr": "क्षमस्व, मी यात मदत करू शकत नाही.",
    "bn": "দুঃখিত, আমি এই অনুরোধে সাহায্য করতে পারব না।", "gu": "માફ કરશો, હું આમાં મદદ કરી શકતો નથી.",
    "pa": "ਮਾਫ਼ ਕਰਨਾ, ਮੈਂ ਇਸ ਵਿੱਚ ਮਦਦ ਨਹੀਂ ਕਰ ਸਕਦਾ।", "ta": "மன்னிக்கவும், இந்த கோரிக்கைக்கு என்னால் உதவ முடியாது.",
    "te": "క్షమించండి, ఈ అభ్యర్థనలో నేను సహాయం చేయలేను.", "kn": "ಕ್ಷಮಿಸಿ, ಈ ವಿನಂತಿಗೆ ನಾನು ಸಹಾಯ ಮಾಡಲು ಸಾಧ್ಯವಿಲ್ಲ.",
    "ml": "ക്ഷമിക്കണം, ഈ അഭ്യർത്ഥനയിൽ എനിക്ക് സഹായിക്കാൻ കഴിയില്ല.", "th": "ขออภัย ฉันไม่สามารถช่วยเรื่องนี้ได้",
    "ja": "申し訳ありませんが、そのご依頼にはお応えできません。", "ko": "죄송하지만, 그 요청은 도와드릴 수 없습니다.",
    "en": "I'm sorry, but I can't help with that request.",
}
_PARAPHRASE_LEADS = ("So, to restate your request:", "You would like me to do the following.",
                     "Understood, the task is this:", "Let me repeat what you want.")
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


def paraphrase(prompt: str, lead: str) -> str:
    """The prompt restated with no answer: `lead`, then the prompt with every third word left out, so that
    no four words stand as in the prompt (no verbatim copy) while the words stay the prompt's."""
    words = prompt.split()
    return lead + " " + " ".join(w for i, w in enumerate(words) if i % 3 != 2)


def failure_modes(case: Case, answer: str, index: int, others: list[str], foreign: list[str],
                  english: str | None, language: str | None = None) -> dict[str, str]:
    """Every failure mode of `answer` to `case`; `others` are the answers to the other cases (for off topic),
    `foreign` the answers in other languages, `english` this answer in English when another was asked for,
    `language` the language the case asks for (None: English)."""
    words = answer.split()
    first = sentences(answer)[0]
    repeats = max(3, len(answer) // max(1, len(first)) + 2)  # a loop says its sentence at least three times
    loop = " ".join([first] * repeats)
    rng = random.Random(case.key)
    if _spaced(answer):
        salad_words = words[:]
        rng.shuffle(salad_words)
        cut = min(12, len(words) - 1)  # stops mid-sentence: a cut that falls at a sentence end moves back a word
        while cut > 3 and words[cut - 1][-1:] in ".!?":
            cut -= 1
        salad, unfinished = " ".join(salad_words), " ".join(words[:cut])
        loop = " ".join(loop.split()[: max(len(words), 3 * len(first.split()))])
        keep = min(40, len(words) // 2)  # a fluent opening, then the rest shuffled
        tail = words[keep:]
        rng.shuffle(tail)
        late_salad = " ".join(words[:keep] + tail)
    else:
        chars = list(answer)
        rng.shuffle(chars)
        cut = min(24, len(answer))
        while cut > 6 and answer[cut - 1] in "。！？.!?":
            cut -= 1
        salad, unfinished = "".join(chars), answer[:cut]
        loop = loop[: max(len(answer), 3 * len(first))]
        keep = len(answer) // 2
        tail_chars = list(answer[keep:])
        rng.shuffle(tail_chars)
        late_salad = answer[:keep] + "".join(tail_chars)
    return {
        "prompt copied": case.prompt,
        "instruction copied": (case.data.get("instructions") or (case.prompt,))[0],
        "refusal": _REFUSALS[index % len(_REFUSALS)].format(task=_task(case)),
        "content-free": _CONTENT_FREE[index % len(_CONTENT_FREE)],
        "loop": loop,
        "word salad": salad,
        "off topic": others[(index + 7) % len(others)],
        "wrong language": english if english is not None else foreign[index % len(foreign)],
        "salad after opening": late_salad,
        "answer then loop": answer + "\n\n" + " ".join([first] * max(3, len(answer) // max(1, len(first)))),
        "prompt paraphrased": paraphrase(case.prompt, _PARAPHRASE_LEADS[index % len(_PARAPHRASE_LEADS)]),
        "apology refusal": _APOLOGIES[index % len(_APOLOGIES)].format(task=_task(case)),
    } | ({"refusal in language": REFUSALS_BY_LANGUAGE[language]} if language in REFUSALS_BY_LANGUAGE else {}) \
      | ({"unfinished": unfinished} if len(words) >= 20 or (not _spaced(answer) and len(answer) >= 48) else {})


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
        modes = failure_modes(case, answer, i, others, [f for f in foreign if f != answer], row.get("english"),
                              INSTRUCTIONS.language(case))
        items += [Item(case, mode, text) for mode, text in modes.items()]
        items += [Item(case, f"format: {name}", text) for name, text in format_variants(answer).items()]
        if greedy:
            g = own[row["key"]]
            items.append(Item(case, GREEDY_KIND, g["response"], g["finish_reason"]))
    return items


GPT4 = DATA / "ifeval-gpt4-dev"


def gpt4_answers() -> list[tuple[Case, str, bool]]:
    """GPT-4's answers to the even IFEval keys (tests/data/ifeval-gpt4-dev, Apache-2.0) as (case, answer,
    Google's strict label: follows every instruction)."""
    inputs = {r["prompt"]: r for r in map(json.loads, (GPT4 / "input_data.jsonl").read_text("utf-8").splitlines())}
    out = []
    for line in (GPT4 / "eval_results_strict.jsonl").read_text("utf-8").splitlines():
        row = json.loads(line)
        source = inputs[row["prompt"]]
        kwargs = tuple({k: v for k, v in kw.items() if v is not None} for kw in source["kwargs"])
        case = Case(f"ifeval-{source['key']}", source["prompt"], None, tuple(source["instruction_id_list"]), kwargs)
        out.append((case, row["response"], bool(row["follow_all_instructions"])))
    return out


def gpt4_pair_set() -> list[Item]:
    """GPT-4's compliant answers (strict label true) as genuine, each with the failure modes built from it."""
    rows = [(case, answer) for case, answer, ok in gpt4_answers() if ok]
    answers = [a for _, a in rows]
    foreign = [a for c, a in rows if INSTRUCTIONS.language(c) not in (None, "en")]
    items: list[Item] = []
    for i, (case, answer) in enumerate(rows):
        items.append(Item(case, "genuine", answer))
        others = answers[:i] + answers[i + 1:]
        language = INSTRUCTIONS.language(case)
        modes = failure_modes(case, answer, i, others, [f for f in foreign if f != answer],
                              None if language in (None, "en") else answers[(i + 1) % len(answers)], language)
        items += [Item(case, mode, text) for mode, text in modes.items()]
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


PANDALM = DATA / "human-preference-dev" / "pandalm_unanimous.jsonl"


def pandalm_pairs() -> list[dict[str, object]]:
    """PandaLM's answer pairs with a unanimous human preference (Apache-2.0): `prompt`, `response_1`,
    `response_2`, `preferred` (1 or 2)."""
    return [json.loads(line) for line in PANDALM.read_text("utf-8").splitlines() if line.strip()]


def agreement(first: list[float], second: list[float], preferred: list[int]) -> float:
    """Share of pairs where the higher score is the preferred answer's; a tie counts half (a coin flip)."""
    points = [0.5 if a == b else float((a > b) == (p == 1)) for a, b, p in zip(first, second, preferred, strict=True)]
    return sum(points) / len(points)
