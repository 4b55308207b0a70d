"""Prompt emphasis: the non-mechanistic baseline a steering method has to beat.

Instead of touching the model, the instruction sentences are emphasised in the prompt itself:

- ``restate``: the user turn ends with "Important: <the instructions>" (the prompt is kept whole);
- ``system``:  a system message asks the model to follow the instructions exactly and quotes them;
- ``both``:    the two together.

If a cheap rewording of the prompt buys as much compliance as PASTA or activation steering, the
mechanistic method is not worth its cost; sweeping this method next to them answers that.
Note: a "system" message replaces a chat template's default system prompt (SmolLM2 and Qwen2.5
insert one when the conversation has none), so the variant changes that line too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from .base import PrepareContext, SteeringError, Value, user_turn

if TYPE_CHECKING:
    from ..cases import Case
    from ..options import RunSpec
    from ..prompts import EncodedBatch

VARIANTS = ("restate", "system", "both")
NOOP = "none"
RESTATE = "\n\nImportant: "
SYSTEM = "Follow these instructions in the user's request exactly:\n"


class PromptEmphasis:
    """Emphasise the case's instructions in the prompt ("restate", "system" or "both"; "none" = unchanged).

    Strength counts the emphasis channels a variant uses (none 0, restate 1, system 1, both 2): the
    variants have no common scale, and this orders them for plots and "gentlest config" choices,
    with restate and system equally gentle.
    """

    name: ClassVar[str] = "prompt"
    param: ClassVar[str] = "variant"
    noop: ClassVar[Value] = NOOP

    @classmethod
    def from_spec(cls, spec: RunSpec) -> PromptEmphasis:
        return cls()

    def __repr__(self) -> str:
        return "PromptEmphasis()"

    def check(self, value: Any) -> str:
        from .base import nearest

        if isinstance(value, str) and value.strip() in (*VARIANTS, NOOP):
            return value.strip()
        hint = nearest(value, (*VARIANTS, NOOP)) if isinstance(value, str) else None
        raise SteeringError(f"prompt variant {value!r} is not one of {', '.join(VARIANTS)} (or {NOOP})"
                            + (f"; did you mean {hint!r}?" if hint else ""))

    def label(self, value: Value, grid: Sequence[Value]) -> str:
        return str(value)

    def strength(self, value: Value) -> float:
        return {NOOP: 0.0, "restate": 1.0, "system": 1.0, "both": 2.0}[self.check(value)]

    def identity(self) -> dict[str, Any]:
        """The method and its wording: rewording the emphasis changes every steered prompt."""
        return {"method": self.name, "restate": RESTATE, "system": SYSTEM}

    def prepare(self, ctx: PrepareContext) -> None:
        """Every steered case needs instruction sentences to emphasise."""
        for case in ctx.steered:
            if not case.instructions:
                raise SteeringError(
                    f"case {case.key!r} has no `instructions` field, so prompt emphasis has nothing to restate; "
                    "use a Split-IFEval-style dataset or run only the baseline for it"
                )

    def render(self, case: Case, value: Value | None) -> list[dict[str, str]]:
        variant = NOOP if value is None else self.check(value)
        if variant == NOOP:
            return user_turn(case)
        if not case.instructions:
            raise SteeringError(f"case {case.key!r} has no `instructions` for prompt emphasis to restate")
        messages = []
        if variant in ("system", "both"):
            messages.append({"role": "system", "content": SYSTEM + "\n".join(f"- {s}" for s in case.instructions)})
        content = case.prompt
        if variant in ("restate", "both"):
            content += RESTATE + " ".join(case.instructions)
        return [*messages, {"role": "user", "content": content}]

    def steer(self, model: Any, batch: EncodedBatch, cases: Sequence[Case],
              values: Sequence[Value | None]) -> contextlib.AbstractContextManager[None]:
        """Nothing to do at run time: the rendered prompt does the work."""
        return contextlib.nullcontext()
