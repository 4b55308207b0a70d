"""Evaluation cases: load them (embedded set, local file or Hugging Face dataset), check, select.

A case is one IFEval prompt plus, in the Split-IFEval layout, the instruction sentences PASTA
highlights. Loading normalises the quirks of the different copies (the Hugging Face copy pads
kwargs with None and stores integers as floats; pandas hands back numpy arrays) so that the same
row gives the same `Case`, and so the same cache key, whatever file it came from.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

EMBEDDED = "embedded"
FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
SEED_INSTRUCTION_TYPES = (
    "keywords:forbidden_words",
    "detectable_format:number_highlighted_sections",
    "language:response_language",
    "startend:end_checker",
)

_JSON_COLUMNS = ("instructions", "instruction_id_list", "kwargs")
_SOURCE_HINT = (
    "A case source is 'embedded', a local .jsonl/.json/.parquet/.csv file, or a Hugging Face "
    "dataset id."
)


class CaseLoadError(ValueError):
    """Cases could not be loaded; the message names the source (and row) and says what to do."""


@dataclass(frozen=True)
class Case:
    """One prompt with its IFEval instructions; `kwargs[i]` parametrises `instruction_id_list[i]`.

    `instructions` holds the instruction sentences (exact substrings of `prompt`) that steering
    emphasises; it is None for rows in the original IFEval layout, which cannot be steered.
    The kwargs dicts are shared, treat them as read-only.
    """

    key: str
    prompt: str
    instructions: tuple[str, ...] | None = None
    instruction_id_list: tuple[str, ...] = ()  # also the case's tags in per-tag views (a user task's categories)
    kwargs: tuple[dict[str, Any], ...] = ()
    target: Any = None  # a user task's reference answer, for its scorer; not used by IFEval

    def __hash__(self) -> int:
        # The generated hash would fail on the kwargs dicts; equal cases share these fields.
        return hash((self.key, self.prompt, self.instruction_id_list))

    @property
    def steerable(self) -> bool:
        """Whether there are instruction spans for PASTA to highlight."""
        return bool(self.instructions)

    def to_dict(self) -> dict[str, Any]:
        """The row in Split-IFEval layout (IFEval layout, no `instructions`, when it is None)."""
        row: dict[str, Any] = {"key": self.key, "prompt": self.prompt}
        if self.instructions is not None:
            row["instructions"] = list(self.instructions)
        row["instruction_id_list"] = list(self.instruction_id_list)
        row["kwargs"] = [dict(kw) for kw in self.kwargs]
        if self.target is not None:
            row["target"] = self.target
        return row

    def content_hash(self) -> str:
        """sha256 of a canonical JSON of all fields: a cache key that changes with the case."""
        canonical = json.dumps(
            self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CaseOffers(Protocol):
    """What a task tells steering methods about its cases; methods ask it instead of reading fields.

    `highlights`: the exact substrings of the prompt to steer towards (PASTA highlights them, prompt
    emphasis restates or marks them, activation steering cuts them out for its paired prompt); empty
    when the case has none. `vector_keys`: the groups a case's activation vectors are fitted and
    looked up by, as (finest key, the coarser key it falls back to) pairs; empty when it has none.
    """

    def highlights(self, case: Case) -> tuple[str, ...]: ...

    def vector_keys(self, case: Case) -> list[tuple[str, str]]: ...


@dataclass(frozen=True)
class InstructionOffers:
    """Cases in the Split-IFEval layout (the default): highlight the instruction sentences; one vector group
    per instruction type, and per target language for `language:response_language`, as the reference
    keeps one vector per language."""

    def highlights(self, case: Case) -> tuple[str, ...]:
        return tuple(case.instructions or ())

    def vector_keys(self, case: Case) -> list[tuple[str, str]]:
        out = []
        for i, kind in enumerate(case.instruction_id_list):
            kwargs = case.kwargs[i] if i < len(case.kwargs) else None
            language = (kwargs or {}).get("language") if kind == "language:response_language" else None
            out.append(((f"{kind}={language}" if language else kind), kind))
        return out


#: what a case offers when no task says otherwise
INSTRUCTIONS = InstructionOffers()


@dataclass(frozen=True)
class CaseSet:
    """The selected cases, as a fixture hands them to tests."""

    cases: tuple[Case, ...]
    source: str = EMBEDDED
    _index: dict[str, Case] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cases", tuple(self.cases))
        object.__setattr__(self, "_index", _index_by_key(self.cases, self.source))

    @classmethod
    def load(
        cls,
        source: str | Path | None = None,
        *,
        split: str = "train",
        instruction_types: Sequence[str] | None = None,
        per_type: int | None = None,
        seed: int = 123,
        single_instruction: bool = True,
    ) -> CaseSet:
        """`load_cases` then `select_cases`, remembering where the cases came from."""
        selected = select_cases(
            load_cases(source, split=split),
            instruction_types=instruction_types,
            per_type=per_type,
            seed=seed,
            single_instruction=single_instruction,
        )
        return cls(tuple(selected), source=EMBEDDED if source is None else str(source))

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> Case:
        return self.cases[index]

    @property
    def types(self) -> tuple[str, ...]:
        """Instruction types present, in order of first appearance."""
        return tuple(dict.fromkeys(t for c in self.cases for t in c.instruction_id_list))

    def by_key(self, key: str) -> Case:
        try:
            return self._index[str(key)]
        except KeyError:
            raise KeyError(f"no case with key {key!r} in {self.source}") from None

    def of_type(self, instruction_type: str) -> tuple[Case, ...]:
        return tuple(c for c in self.cases if instruction_type in c.instruction_id_list)


def load_cases(source: str | Path | None = None, split: str = "train") -> list[Case]:
    """Load cases: the embedded set (None or "embedded"), a local file or a Hugging Face dataset.

    Raises CaseLoadError naming the source, and the line or row for a malformed row.
    """
    if source is None or str(source) == EMBEDDED:
        origin = "embedded cases (pytest_steer/data/cases.jsonl)"
        text = resources.files("pytest_steer").joinpath("data", "cases.jsonl").read_text("utf-8")
        return _check_unique(_load_jsonl_text(text, origin), origin)
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix not in FILE_SUFFIXES:
            raise CaseLoadError(
                f"{path}: unsupported file type {suffix or '(none)'!r}; use one of "
                f"{', '.join(FILE_SUFFIXES)}."
            )
        return _check_unique(_load_file(path, suffix), str(path))
    if suffix in FILE_SUFFIXES:
        raise CaseLoadError(f"case file {path} does not exist. {_SOURCE_HINT}")
    return _check_unique(_load_hf(str(source), split), f"Hugging Face dataset {source!r}")


def select_cases(
    cases: Iterable[Case],
    *,
    instruction_types: Sequence[str] | None = None,
    per_type: int | None = None,
    seed: int = 123,
    single_instruction: bool = True,
) -> list[Case]:
    """Pick a balanced, reproducible subset: up to `per_type` cases for each instruction type.

    Within a type, cases are ordered by sha256(seed, type, key), so the choice is the same on every
    machine and Python version, and a larger `per_type` extends a smaller one. The output is grouped
    by type, in the order of `instruction_types` (sorted when None). Without `single_instruction`,
    a multi-instruction case counts for the first of its types in that order.
    """
    if per_type is not None and per_type < 1:
        raise ValueError(f"per_type must be a positive number of cases, got {per_type}.")
    pool = [c for c in cases if not single_instruction or len(c.instruction_id_list) == 1]
    if not pool:
        what = "single-instruction cases" if single_instruction else "cases"
        raise ValueError(f"there are no {what} to select from.")
    counts: dict[str, int] = {}
    for c in pool:
        for t in dict.fromkeys(c.instruction_id_list):
            counts[t] = counts.get(t, 0) + 1
    available = ", ".join(f"{t} ({n})" for t, n in sorted(counts.items()))
    if instruction_types is None:
        types = sorted(counts)
    else:
        types = list(dict.fromkeys(instruction_types))
        if not types:
            raise ValueError(f"instruction_types is empty; available types: {available}.")
        unknown = [t for t in types if t not in counts]
        if unknown:
            raise ValueError(
                f"no cases for instruction type(s) {', '.join(unknown)}; "
                f"available types: {available}."
            )

    groups: dict[str, list[Case]] = {t: [] for t in types}
    for c in pool:
        first = next((t for t in types if t in c.instruction_id_list), None)
        if first is not None:
            groups[first].append(c)
    selected: list[Case] = []
    for t in types:
        group = sorted(groups[t], key=functools.partial(_case_order, seed, t))
        if per_type is not None:
            if len(group) < per_type:
                raise ValueError(
                    f"instruction type {t!r} has only {len(group)} case(s) available, fewer than "
                    f"per_type={per_type}; lower per_type or use a larger case set."
                )
            group = group[:per_type]
        selected.extend(group)
    return selected


def _case_order(seed: int, instruction_type: str, case: Case) -> str:
    return _draw_order(seed, instruction_type, case.key)


def _draw_order(seed: int, instruction_type: str, key: str) -> str:
    return hashlib.sha256(f"{seed}\x00{instruction_type}\x00{key}".encode()).hexdigest()


def _index_by_key(cases: Iterable[Case], source: str) -> dict[str, Case]:
    index: dict[str, Case] = {}
    for c in cases:
        if c.key in index:
            raise CaseLoadError(f"{source}: duplicate case key {c.key!r}; keys must be unique.")
        index[c.key] = c
    return index


def _check_unique(cases: list[Case], origin: str) -> list[Case]:
    _index_by_key(cases, origin)
    return cases


# -- reading -----------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; a byte-order mark is dropped, as pandas does for .csv."""
    try:
        return path.read_text("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CaseLoadError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                            "save the file as UTF-8") from None


def _load_file(path: Path, suffix: str) -> list[Case]:
    if suffix == ".jsonl":
        return _load_jsonl_text(_read_text(path), str(path))
    if suffix == ".json":
        try:
            rows = json.loads(_read_text(path))
        except json.JSONDecodeError as e:
            raise CaseLoadError(
                f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}."
            ) from None
        if not isinstance(rows, list):
            raise CaseLoadError(
                f"{path}: expected a JSON array of row objects, got {type(rows).__name__}."
            )
        return _rows_to_cases(rows, str(path))

    import pandas as pd

    try:
        frame = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    except Exception as e:  # pandas/pyarrow raise many types; the message is what matters
        raise CaseLoadError(f"{path}: could not read the file: {type(e).__name__}: {e}") from None
    rows = frame.to_dict(orient="records")
    if suffix == ".csv":
        rows = [_parse_json_columns(row) for row in rows]
    return _rows_to_cases(rows, str(path))


def _parse_json_columns(row: dict[str, Any]) -> dict[str, Any]:
    """CSV stores the list and dict columns as JSON strings; a cell that is not JSON stays as is."""
    for column in _JSON_COLUMNS:
        value = row.get(column)
        if isinstance(value, str):
            try:
                row[column] = json.loads(value)
            except json.JSONDecodeError:
                pass
    return row


def _load_jsonl_text(text: str, origin: str) -> list[Case]:
    cases: list[Case] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{origin} line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CaseLoadError(f"{where}: invalid JSON at column {e.colno}: {e.msg}.") from None
        cases.append(_row_to_case(row, where))
    if not cases:
        raise CaseLoadError(f"{origin}: no cases found (the file is empty).")
    return cases


def _rows_to_cases(rows: Iterable[Any], origin: str) -> list[Case]:
    cases = [_row_to_case(row, f"{origin} row {i}") for i, row in enumerate(rows)]
    if not cases:
        raise CaseLoadError(f"{origin}: no cases found (no rows).")
    return cases


def _load_hf(dataset_id: str, split: str) -> list[Case]:
    from .models import split_revision

    name, revision = split_revision(dataset_id)  # `org/name@rev` pins a branch, tag or commit
    try:
        import datasets

        dataset = datasets.load_dataset(name, split=split, revision=revision)
    except Exception as e:  # offline, unknown id, bad split: all end in the same advice
        raise CaseLoadError(
            f"could not load cases from Hugging Face dataset {dataset_id!r} (split {split!r}): "
            f"{type(e).__name__}: {e}\n{_SOURCE_HINT} To use a Hub dataset without network, set "
            "HF_HUB_OFFLINE=1 and have it in the Hugging Face cache (HF_HOME / HF_DATASETS_CACHE), "
            "or save it once as a local .jsonl/.parquet file and pass that path."
        ) from None
    return _rows_to_cases(dataset, f"Hugging Face dataset {dataset_id!r} (split {split!r})")


# -- normalising -------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """numpy arrays and scalars to Python, integral floats to int, recursively."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # numpy arrays and scalars
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _row_to_case(row: Any, where: str) -> Case:
    def fail(problem: str) -> CaseLoadError:
        return CaseLoadError(
            f"{where}: {problem}. Each row needs 'key', 'prompt', 'instruction_id_list' and "
            "'kwargs' (one dict per instruction id), and optionally 'instructions' (exact "
            "substrings of the prompt)."
        )

    if not isinstance(row, Mapping):
        raise fail(f"expected a JSON object, got {type(row).__name__}")
    missing = [
        f for f in ("key", "prompt", "instruction_id_list", "kwargs") if _is_missing(row.get(f))
    ]
    if missing:
        raise fail(f"missing field(s) {', '.join(missing)}")

    key = _plain(row["key"])
    prompt = row["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise fail("'prompt' must be a non-empty string")
    ids = _plain(row["instruction_id_list"])
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise fail(f"'instruction_id_list' must be a non-empty list of strings, got {ids!r}")
    raw_kwargs = _plain(row["kwargs"])
    if not isinstance(raw_kwargs, list) or not all(
        kw is None or isinstance(kw, dict) for kw in raw_kwargs
    ):
        raise fail(f"'kwargs' must be a list of objects, got {raw_kwargs!r}")
    if len(raw_kwargs) != len(ids):
        raise fail(f"{len(raw_kwargs)} kwargs dict(s) for {len(ids)} instruction id(s)")
    kwargs = tuple({k: v for k, v in (kw or {}).items() if v is not None} for kw in raw_kwargs)

    instructions: tuple[str, ...] | None = None
    raw_instructions = row.get("instructions")
    if not _is_missing(raw_instructions):
        spans = _plain(raw_instructions)
        if not isinstance(spans, list) or not all(isinstance(s, str) and s for s in spans):
            raise fail(f"'instructions' must be a list of non-empty strings, got {spans!r}")
        # a span missing from its prompt is the steering method's call (--steer-on-missing), not the loader's
        instructions = tuple(spans)

    return Case(
        key=str(key),
        prompt=prompt,
        instructions=instructions,
        instruction_id_list=tuple(ids),
        kwargs=kwargs,
    )
