"""Combined configs: one grid entry that applies two (or more) methods at once, e.g. prompt emphasis with
an activation-steering vector (`--steer-combine prompt-restate+actadd-c1`).

A combined config names single configs of the grid by their labels; its rows render the prompt as the one
part that rewrites it does (or as the plain user turn), and every part's method steers the same rows at
its value, exactly as the engine steers a single config. Whether the parts compose is decided from what
each method declares, before anything runs:

- `rewrites(value)`: how the method renders the prompt at `value`: "none" (the case's prompt as one user
  turn), "keeps" (the prompt verbatim, text added around it) or "replaces" (the prompt itself changed).
  A method that does not declare it is taken to replace the prompt.
- `needs_prompt`: the method locates the case's prompt in the rendered text (PASTA's highlight spans).

Two parts that both change the rendering cannot both be applied; a part that needs the prompt cannot be
combined with one that replaces it; a method appears at most once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..options import nearest
from .base import GridPoint, SteeringError, SteeringMethod, user_turn

if TYPE_CHECKING:
    from ..records import Case

SEPARATOR = "+"
REWRITES = ("none", "keeps", "replaces")


def rewrites(method: SteeringMethod, value: Any) -> str:
    """How `method` at `value` renders a case's prompt (see the module docstring)."""
    declared = getattr(method, "rewrites", None)
    how = declared(value) if callable(declared) else "replaces"
    if how not in REWRITES:
        raise SteeringError(f"method {method.name!r}: rewrites() returned {how!r}; use one of {', '.join(REWRITES)}")
    return str(how)


def combined_config(label: str, singles: Sequence[GridPoint], methods: Mapping[str, SteeringMethod]) -> GridPoint:
    """The combined config `label` ("prompt-restate+actadd-c1") made of the single configs it names;
    SteeringError (before any work) when a part is not in the grid or the parts cannot compose."""
    by_label = {c.label: c for c in singles if not c.is_baseline}
    names = [p.strip() for p in label.split(SEPARATOR)]
    if len(names) < 2 or not all(names):
        raise SteeringError(f"combined config {label!r}: give two or more of the grid's configs joined by "
                            f"'{SEPARATOR}', e.g. prompt-restate+actadd-c1")
    parts: list[GridPoint] = []
    for name in names:
        if name not in by_label:
            hint = nearest(name, list(by_label))
            raise SteeringError(f"combined config {label!r}: {name!r} is not a config of this grid (it has "
                                f"{', '.join(by_label) or 'none'})" + (f"; did you mean {hint!r}?" if hint else "")
                                + "; a part must also be swept alone, so add its method and value to the grid")
        parts.append(by_label[name])
    pairs = [pair for p in parts for pair in p.steering()]
    used = [m for m, _ in pairs]
    twice = sorted({m for m in used if used.count(m) > 1})
    if twice:
        raise SteeringError(f"combined config {label!r} applies {twice[0]} twice; combine different methods")
    how = {m: rewrites(methods[m], v) for m, v in pairs}
    changing = [m for m, h in how.items() if h != "none"]
    if len(changing) > 1:
        raise SteeringError(f"combined config {label!r} cannot compose: {' and '.join(changing)} both change the "
                            "prompt, and a row has one prompt")
    needing = [m for m in how if getattr(methods[m], "needs_prompt", False)]
    replacing = [m for m, h in how.items() if h == "replaces"]
    if needing and replacing:
        raise SteeringError(f"combined config {label!r} cannot compose: {needing[0]} highlights text of the case's "
                            f"prompt, which {replacing[0]} at its value rewrites")
    return GridPoint(SEPARATOR.join(p.method for p in parts), SEPARATOR.join(str(p.value) for p in parts),
                     SEPARATOR.join(p.label for p in parts), sum(p.strength for p in parts), tuple(pairs))


def render(config: GridPoint, case: Case, methods: Mapping[str, SteeringMethod]) -> list[dict[str, str]]:
    """The chat messages of a row: its one prompt-changing part renders it (the plain user turn if none does)."""
    pairs = config.steering()
    if not pairs:
        return user_turn(case)
    if len(pairs) == 1:
        method, value = pairs[0]
        return methods[method].render(case, value)
    for method, value in pairs:
        if rewrites(methods[method], value) != "none":
            return methods[method].render(case, value)
    return user_turn(case)
