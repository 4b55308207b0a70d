"""Prompt emphasis: the non-mechanistic baseline a steering method has to beat.

Instead of touching the model, the instruction sentences are emphasised in the prompt itself:

- ``restate``: the user turn ends with "Important: <the instructions>" (the prompt is kept whole);
- ``system``:  a system message asks the model to follow the instructions exactly and quotes them;
  it comes after the chat template's default system text (SmolLM2 and Qwen2.5 insert one when the
  conversation has none), so the variant adds the emphasis and drops nothing;
- ``both``:    the two together;
- ``marked``:  each instruction sentence wrapped in ``*`` where it stands in the prompt: the PASTA
  paper's prompting baseline, the textual counterpart of highlighting the span for attention steering.

If a cheap rewording of the prompt buys as much compliance as PASTA or activation steering, the
mechanistic method is not worth its cost; sweeping this method next to them answers that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..options import Option, grid_parser, nearest
from .base import INSTRUCTIONS, CaseOffers, PrepareContext, SteeringError, Value, no_highlights, user_turn

if TYPE_CHECKING:
    from ..prompts import EncodedBatch
    from ..records import Case

VARIANTS = ("restate", "system", "both", "marked")
NOOP = "none"
RESTATE = "\n\nImportant: "
SYSTEM = "Follow these instructions in the user's request exactly:\n"
MARK = "*"


def check_variant(value: Any) -> str:
    """Prompt emphasis's one rule for its variant: one of VARIANTS, or NOOP (unchanged)."""
    if isinstance(value, str) and value.strip() in (*VARIANTS, NOOP):
        return value.strip()
    hint = nearest(value, (*VARIANTS, NOOP)) if isinstance(value, str) else None
    raise SteeringError(f"prompt variant {value!r} is not one of {', '.join(VARIANTS)} (or {NOOP})"
                        + (f"; did you mean {hint!r}?" if hint else ""))


class PromptEmphasis:
    """Emphasise the case's instructions in the prompt ("restate", "system", "both" or "marked"; "none" = unchanged).

    Strength counts the emphasis channels a variant uses (none 0, restate, system and marked 1,
    both 2): the variants have no common scale, and this orders them for plots and "gentlest
    config" choices. `prepare` reads the template's default system text, which `system` keeps.
    """

    name: ClassVar[str] = "prompt"
    param: ClassVar[str] = "variant"
    noop: ClassVar[Value] = NOOP
    grid: ClassVar[Option] = Option("prompt_variants", grid_parser("prompt variant", check_variant, NOOP, "restate"),
                                    ("restate", "system"),
                                    "prompt-emphasis variants to sweep: " + ", ".join(VARIANTS))
    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self) -> None:
        self._default_system: str | None = None  # the template's own system text, found in prepare
        self.offers: CaseOffers = INSTRUCTIONS  # what each case offers to emphasise: the run's task, from prepare

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> PromptEmphasis:
        return cls()

    def __repr__(self) -> str:
        return "PromptEmphasis()"

    def check(self, value: Any) -> str:
        return check_variant(value)

    def label(self, value: Value, grid: Sequence[Value]) -> str:
        return str(value)

    def strength(self, value: Value) -> float:
        return {NOOP: 0.0, "restate": 1.0, "system": 1.0, "both": 2.0, "marked": 1.0}[self.check(value)]

    def rewrites(self, value: Value) -> str:
        """For combined configs: `marked` changes the prompt's text, the others add around it verbatim."""
        variant = self.check(value)
        return "none" if variant == NOOP else "replaces" if variant == "marked" else "keeps"

    def identity(self) -> dict[str, Any]:
        """The method and its wording: rewording the emphasis changes every steered prompt."""
        return {"method": self.name, "restate": RESTATE, "system": SYSTEM, "mark": MARK,
                "default_system": self._default_system}

    def prepare(self, ctx: PrepareContext) -> None:
        """Every steered case needs instruction sentences to emphasise (and, to mark them, found in its prompt)."""
        from ..prompts import default_system_text

        self.offers = ctx.task
        for case in ctx.steered:
            if not self.offers.highlights(case):
                raise no_highlights(case, "prompt emphasis", "restate")
            _marked(case, self.offers.highlights(case))
        tokenizer = getattr(ctx.model, "tokenizer", None)
        self._default_system = default_system_text(tokenizer) if tokenizer is not None else None

    def render(self, case: Case, value: Value | None) -> list[dict[str, str]]:
        variant = NOOP if value is None else self.check(value)
        if variant == NOOP:
            return user_turn(case)
        highlights = self.offers.highlights(case)
        if not highlights:
            raise no_highlights(case, "prompt emphasis", "restate")
        if variant == "marked":
            return [{"role": "user", "content": _marked(case, highlights)}]
        messages = []
        if variant in ("system", "both"):
            emphasis = SYSTEM + "\n".join(f"- {s}" for s in highlights)
            keep = f"{self._default_system}\n\n" if self._default_system else ""
            messages.append({"role": "system", "content": keep + emphasis})
        content = case.prompt
        if variant in ("restate", "both"):
            content += RESTATE + " ".join(highlights)
        return [*messages, {"role": "user", "content": content}]

    def steer(self, model: Any, batch: EncodedBatch, cases: Sequence[Case],
              values: Sequence[Value | None]) -> contextlib.AbstractContextManager[None]:
        """Nothing to do at run time: the rendered prompt does the work."""
        return contextlib.nullcontext()


def _marked(case: Case, highlights: Sequence[str]) -> str:
    """The prompt with each highlight's first occurrence wrapped in `MARK`s."""
    text, at = case.prompt, 0
    for sentence in highlights:
        found = text.find(sentence, at) if sentence else -1
        if found < 0:
            found = text.find(sentence) if sentence else -1
        if found < 0:
            raise SteeringError(f"case {case.key!r}: instruction text not found in the prompt, so it cannot be "
                                f"marked: {sentence!r}")
        end = found + len(sentence)
        text = text[:found] + MARK + sentence + MARK + text[end:]
        at = end + 2 * len(MARK)
    return text
