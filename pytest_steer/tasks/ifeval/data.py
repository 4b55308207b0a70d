"""The IFEval task's data: load its cases (embedded set, local file or Hugging Face dataset), check,
select; its seed types and its selection options (`IFEVAL_OPTIONS`).

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
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ...options import Option, Settings, parse_int, parse_list, parse_path, parse_positive_int
from ..base import Case, CaseLoadError, CaseSet, CaseSplit, index_by_key

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


#: held-out IFEval cases per instruction type for fitting (activation-steering vectors)
HELD_OUT_PER_TYPE = 8


def load_case_set(
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
    return CaseSet(tuple(selected), source=EMBEDDED if source is None else str(source))


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
    try:
        is_file = path.is_file()
    except OSError as exc:  # a name the system refuses, e.g. a part longer than 255 bytes
        raise CaseLoadError(f"case file {path}: cannot be read ({exc.strerror or exc}). {_SOURCE_HINT}") from None
    if is_file:
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
    pool = [c for c in cases if not single_instruction or len(c.tags) == 1]
    if not pool:
        what = "single-instruction cases" if single_instruction else "cases"
        raise ValueError(f"there are no {what} to select from.")
    counts: dict[str, int] = {}
    for c in pool:
        for t in dict.fromkeys(c.tags):
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
        first = next((t for t in types if t in c.tags), None)
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


def _check_unique(cases: list[Case], origin: str) -> list[Case]:
    index_by_key(cases, origin)
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
    from ...models import split_revision

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

    return ifeval_case(str(key), prompt, instructions, tuple(ids), kwargs)


def ifeval_case(key: str, prompt: str, instructions: Sequence[str] | None = None,
                instruction_ids: Sequence[str] = (), kwargs: Sequence[Mapping[str, Any]] = (),
                target: Any = None) -> Case:
    """An IFEval case: the instruction ids are its tags; the instruction sentences (exact substrings of
    the prompt that steering emphasises; None in the original IFEval layout, which cannot be steered)
    and `kwargs[i]`, the arguments of instruction i, are its data."""
    data: dict[str, Any] = {"kwargs": tuple(kwargs)}
    if instructions is not None:
        data["instructions"] = tuple(instructions)
    return Case(key, prompt, tags=tuple(instruction_ids), data=data, target=target)


def parse_types(value: object) -> tuple[str, ...]:
    """Comma-separated instruction ids; "seed" = the seed study's four, "all" = no filter."""
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value).strip()
    if text == "seed":
        return SEED_INSTRUCTION_TYPES
    if text == "all":
        return ()
    return parse_list(text)


#: IFEval's own settings: where its cases come from and which are selected
IFEVAL_OPTIONS = (
    Option("dataset", parse_path, "embedded",
           "cases: 'embedded', a .jsonl/.json/.parquet/.csv file or a Hugging Face dataset id"),
    Option("split", str, "train", "dataset split for Hugging Face datasets"),
    Option("types", parse_types, SEED_INSTRUCTION_TYPES,
           "instruction types to keep, comma-separated; 'seed' (the four of the seed study) or 'all'"),
    Option("per_type", parse_positive_int, 4, "cases sampled per instruction type"),
    Option("case_seed", parse_int, 123, "seed of the balanced case sampling"),
)


def ifeval_split(settings: Settings) -> CaseSplit:
    dataset = settings["dataset"]
    every = load_cases(None if dataset == "embedded" else dataset, split=settings["split"])
    types = settings["types"] or None
    evaluated = CaseSet(tuple(select_cases(every, instruction_types=types, per_type=settings["per_type"],
                                           seed=settings["case_seed"])), source=dataset)
    chosen = {c.key for c in evaluated}
    held: list[Case] = []
    for t in evaluated.types:
        pool = [c for c in select_cases(every, instruction_types=[t], seed=settings["case_seed"])
                if c.key not in chosen]
        held += pool[:HELD_OUT_PER_TYPE]
    return CaseSplit(evaluated, tuple(held))
