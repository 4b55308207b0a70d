"""Does the headline quality punish degenerate text? Checked on the pair set and on a run's results table.

First, unless --skip-pairs: the pair set of tests/quality_pairs.py (hand-written answers to 31 embedded
cases, each failure mode built from them, format-only variants and the model's own greedy answers),
scored by `pytest_steer.score_responses` on the embedded model, as a per-mode table: in how many pairs
the genuine answer ranks above the mode (formats: stays within 10%), and the median quality ratio.

Then it reads the results.jsonl that `make eval` writes (rows with `response` and a `scores` dict holding
`quality`), recomputes seq-rep-4 from each response's text with pytest_steer.metrics.side_effects (so
the figure does not trust the stored `repetition` column), and prints:

(a) the Spearman correlation between quality and rep-4; target <= 0 (more repetition, no more quality);
(b) how many responses with rep-4 >= 0.5 (half their 4-grams repeat: loops) sit in the top decile
    of quality; target 0.

When the rows also hold `fluency`, the same two figures for it follow, for contrast: fluency is what
the headline was before, and loops score high on it. Exit status 1 when a target is missed, 2 when
the file has no scored rows.

    python bench/bench_quality.py                          # pair set, then steer-report/results.jsonl
    python bench/bench_quality.py path/to/results.jsonl --skip-pairs
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pytest_steer.metrics.side_effects import rep_n, text_tokens

LOOP_REP4 = 0.5
TOP_SHARE = 0.1
FORMAT_BAND = 0.1


def pair_table() -> None:
    """Score the pair set and print, per mode, how often the genuine answer ranks above it."""
    import time

    from pytest_steer import score_responses
    from tests.quality_pairs import FORMATS, GREEDY_KIND, MODES, pair_set

    items = pair_set()
    start = time.perf_counter()
    frame = score_responses([i.case.prompt for i in items], [i.response for i in items],
                            finish_reasons=[i.finish_reason for i in items], cases=[i.case for i in items],
                            batch_size=16, fluency=False)
    seconds = time.perf_counter() - start
    frame["kind"] = [i.kind for i in items]
    genuine = frame[frame["kind"] == "genuine"].set_index("key")["quality"]
    print(f"pair set: {len(frame)} responses to {len(genuine)} cases scored in {seconds:.0f} s "
          f"(genuine answers: median quality {genuine.median():.3f}, min {genuine.min():.3f})")
    print("| variant | pairs | genuine ranks higher | within 10% | median quality / genuine |")
    print("|---|---|---|---|---|")
    for kind in [*MODES, *(f"format: {f}" for f in FORMATS), GREEDY_KIND]:
        rows = frame[frame["kind"] == kind]
        base = rows["key"].map(genuine).to_numpy()
        ratio = rows["quality"].to_numpy() / base
        higher = int((base > rows["quality"].to_numpy()).sum())
        within = int((abs(ratio - 1) <= FORMAT_BAND).sum())
        print(f"| {kind} | {len(rows)} | {higher} ({higher / len(rows):.0%}) | {within} ({within / len(rows):.0%}) "
              f"| {float(pd.Series(ratio).median()):.3f} |")


def load(path: Path) -> list[dict]:
    """The rows of a results.jsonl, one dict each."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def column(rows: list[dict], name: str) -> list[float | None]:
    """A score by name from each row's `scores` (None where missing or NaN)."""
    out: list[float | None] = []
    for row in rows:
        value = (row.get("scores") or {}).get(name)
        out.append(None if value is None or math.isnan(float(value)) else float(value))
    return out


def figures(score: list[float | None], rep4: list[float]) -> tuple[float, int, int, int]:
    """(Spearman rho of score vs rep-4, loops in the score's top decile, top-decile size, rows used)."""
    pairs = [(s, r) for s, r in zip(score, rep4, strict=True) if s is not None]
    if not pairs:
        return math.nan, 0, 0, 0
    scores, reps = [s for s, _ in pairs], [r for _, r in pairs]
    constant = len(set(scores)) < 2 or len(set(reps)) < 2
    rho = math.nan if constant else float(spearmanr(scores, reps).statistic)
    k = max(1, math.ceil(TOP_SHARE * len(pairs)))
    top = sorted(pairs, key=lambda p: -p[0])[:k]
    return rho, sum(r >= LOOP_REP4 for _, r in top), k, len(pairs)


def report(name: str, score: list[float | None], rep4: list[float], *, targets: bool = True) -> bool:
    """Print one score's two figures (with the targets' verdicts if `targets`); True when both are met."""
    rho, loops, k, n = figures(score, rep4)
    rho_ok = math.isnan(rho) or rho <= 0  # undefined when a column is constant: nothing to misrank
    verdict = (lambda target, ok: f"  [target {target}: {'ok' if ok else 'FAIL'}]") if targets else (lambda *_: "")
    print(f"{name:>8}: Spearman(score, rep-4) = {rho:+.3f} over {n} rows{verdict('<= 0', rho_ok)}")
    print(f"{'':>8}  rep-4 >= {LOOP_REP4} in the top {TOP_SHARE:.0%} ({k} rows) = {loops}{verdict('0', loops == 0)}")
    return rho_ok and loops == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", default="steer-report", type=Path,
                    help="a results.jsonl, or a report dir whose results.jsonl files (one per run) are read "
                         "together (default: steer-report, from `make eval`)")
    ap.add_argument("--skip-pairs", action="store_true", help="only the results table, not the pair set")
    args = ap.parse_args()
    if not args.skip_pairs:
        pair_table()
    files = sorted(args.results.rglob("results.jsonl")) if args.results.is_dir() else [args.results]
    files = [f for f in files if f.is_file()]
    if not files:
        print(f"{args.results}: no results.jsonl; run `make eval` first or pass one", file=sys.stderr)
        return 2
    rows = [row for f in files for row in load(f)]
    args.results = Path(", ".join(map(str, files)))
    quality = column(rows, "quality")
    if all(q is None for q in quality):
        print(f"{args.results}: no row has a quality score", file=sys.stderr)
        return 2
    rep4 = [rep_n(text_tokens(row.get("response") or ""), 4) for row in rows]
    print(f"{args.results}: {len(rows)} rows, {sum(r >= LOOP_REP4 for r in rep4)} with rep-4 >= {LOOP_REP4}, "
          f"max rep-4 {max(rep4, default=0.0):.2f}")
    ok = report("quality", quality, rep4)
    fluency = column(rows, "fluency")
    if any(f is not None for f in fluency):
        print("for contrast, the old headline fluency (no targets):")
        report("fluency", fluency, rep4, targets=False)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
