"""What an IFEval case offers the steering methods: its instruction sentences to highlight, and the
directions that steer each instruction, keyed as the reference keys them (per target language for
`language:response_language`, per word for the keyword types)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ...records import Case
from ..base import ECHO_TAGS, Expectation, VectorKey

#: keyword types the reference keys per word: kwargs field of the words, the key prefix of their
#: (inclusion) directions, and the sign those directions are added with
_PER_WORD = {
    "keywords:existence": ("keywords", "keywords:existence", 1.0),
    "keywords:forbidden_words": ("forbidden_words", "keywords:existence", -1.0),
}


def ifeval_vector_keys(kind: str, kwargs: Mapping[str, Any] | None) -> list[VectorKey]:
    """The directions that steer one IFEval instruction of type `kind` with arguments `kwargs`.

    As the reference keys them: `language:response_language` per target language
    ("language:response_language=de"); `keywords:existence` per keyword ("keywords:existence=cat"),
    and `keywords:forbidden_words` by each forbidden word's inclusion direction, negated; other types
    by type. Words are lower-cased. Each falls back to the type's own direction.
    """
    kwargs = kwargs or {}
    if kind == "language:response_language" and kwargs.get("language"):
        return [VectorKey(f"{kind}={kwargs['language']}", f"{kind}={kwargs['language']}", kind)]
    if kind in _PER_WORD:
        field_name, prefix, sign = _PER_WORD[kind]
        raw = kwargs.get(field_name)
        words = list(dict.fromkeys(str(w).strip().lower() for w in raw if str(w).strip())) \
            if isinstance(raw, (list, tuple)) else []
        if words:
            return [VectorKey(f"{kind}={w}", f"{prefix}={w}", kind, sign, 1 / len(words), True) for w in words]
        return [VectorKey(kind, kind, kind, 1.0, 1.0, True)]
    return [VectorKey(kind, kind, kind)]


@dataclass(frozen=True)
class InstructionOffers:
    """Cases in the Split-IFEval layout: highlight the instruction sentences; one vector group per
    instruction type, and per target language for `language:response_language`, as the reference keeps
    one vector per language."""

    #: names this keying in cache keys (activation steering's vectors), as it always has been named
    keying: ClassVar[str] = "language+keywords"

    def highlights(self, case: Case) -> tuple[str, ...]:
        return tuple(case.data.get("instructions") or ())

    def vector_keys(self, case: Case) -> list[list[VectorKey]]:
        kwargs = list(case.data.get("kwargs", ()))
        return [ifeval_vector_keys(kind, kwargs[i] if i < len(kwargs) else None)
                for i, kind in enumerate(case.tags)]

    def language(self, case: Case) -> str | None:
        """IFEval's `language:response_language` argument, else None."""
        for kind, kw in zip(case.tags, case.data.get("kwargs", ()), strict=False):  # tags may come without kwargs
            if kind == "language:response_language" and kw and kw.get("language"):
                return str(kw["language"])
        return None

    def expectation(self, case: Case) -> Expectation:
        """The language asked for; the prompt said back for `combination:repeat_prompt`, and an option the
        prompt lists for `detectable_format:constrained_response`."""
        return Expectation(self.language(case), bool(ECHO_TAGS & set(case.tags)))


#: what an IFEval case offers
IFEVAL_OFFERS = InstructionOffers()
