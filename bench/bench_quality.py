"""Does the headline quality judge damage and not difference? Checked on real answers, the pair set, real
people, and a run's results table.

First, unless --skip-pairs, three tables, scored by `pytest_steer.score_responses` on the embedded model:

1. per mode: the pair set of tests/quality_pairs.py (hand-written answers to 31 embedded cases, and
   GPT-4's compliant IFEval answers, each with the failure modes built from it; format-only variants and
   the model's own greedy answers for the hand-written set): in how many pairs the genuine answer ranks
   above the mode (formats: stays within 10%), and the median quality ratio; the word-salad modes also
   counted in the languages whose word order the model judges, the tests' bar;
2. per instruction type: GPT-4's answers that Google's checker labels as following every instruction,
   how many score below 0.5 (the bar: at most 10% per type with at least 5 answers);
3. PandaLM's 794 answer pairs with a unanimous human preference: how often the headline, and "prefer the
   longer answer", agree with the people (a tie counts half).

Then it reads the results.jsonl that `make eval` writes (rows with `response` and a `scores` dict holding
`quality`), recomputes seq-rep-4 from each response's text with pytest_steer.metrics.measures (so
the figure does not trust the stored `repetition` column), and prints:

(a) the Spearman correlation between quality and rep-4; target <= 0 (more repetition, no more quality);
(b) how many responses with rep-4 >= 0.5 (half their 4-grams repeat: loops) sit in the top decile
    of quality; target 0.

When the rows also hold `fluency`, the same two figures for it follow, for contrast: fluency is what
the headline was before, and loops score high on it. Exit status 1 when a target is missed, 2 when
the file has no scored rows.

    python bench/bench_quality.py                          # pair set, then steer-report/results.jsonl
    python bench/bench_quality.py --gpt4-step 6            # GPT-4's modes from every 6th answer, as the tests
    python bench/bench_quality.py path/to/results.jsonl --skip-pairs
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pytest_steer.metrics.measures import detect_language, rep_n, text_tokens

LOOP_REP4 = 0.5
TOP_SHARE = 0.1
FORMAT_BAND = 0.1


def _scored(items: list) -> tuple[pd.DataFrame, float]:
    """score_responses over pair-set items, with a `kind` column, and the seconds it took."""
    import time

    from pytest_steer import score_responses

    start = time.perf_counter()
    frame = score_responses([i.case.prompt for i in items], [i.response for i in items],
                            finish_reasons=[i.finish_reason for i in items], cases=[i.case for i in items],
                            batch_size=32, fluency=False)
    return frame.assign(kind=[i.kind for i in items]), time.perf_counter() - start


def pair_table(step: int) -> pd.DataFrame:
    """Score both pair sets; print, per mode, how often the genuine answer ranks above it. Returns GPT-4's rows.

    GPT-4's genuine answers are all scored; its failure modes are built from every `step`-th of them and
    from every answer to a case that asks for another language (step 1: from all)."""
    from tests.quality_pairs import FORMATS, GREEDY_KIND, MODES, gpt4_pair_set, pair_set

    gpt4 = gpt4_pair_set()
    keys = set(list(dict.fromkeys(i.case.key for i in gpt4))[::step])
    keys |= {i.case.key for i in gpt4 if i.kind == "refusal in language"}
    gpt4 = [i for i in gpt4 if i.kind == "genuine" or i.case.key in keys]
    frames = {}
    for name, items in (("hand-written", pair_set()), ("GPT-4", gpt4)):
        frame, seconds = _scored(items)
        genuine = frame[frame["kind"] == "genuine"].set_index("key")["quality"]
        print(f"{name} pair set: {len(frame)} responses to {len(genuine)} cases scored in {seconds:.0f} s "
              f"(genuine answers: median quality {genuine.median():.3f}, min {genuine.min():.3f})")
        own = frame[frame["kind"] == "genuine"].set_index("key")["response"].map(detect_language)
        frame = frames[name] = frame.assign(genuine=frame["key"].map(genuine).to_numpy(),
                                            genuine_language=frame["key"].map(own).to_numpy())
        print(f"| variant ({name}) | pairs | genuine ranks higher (formats: within 10%) | median quality / genuine |")
        print("|---|---|---|---|")
        for kind in [*MODES, *(f"format: {f}" for f in FORMATS), GREEDY_KIND]:
            rows = frame[frame["kind"] == kind]
            if rows.empty:
                continue
            ratio = rows["quality"].to_numpy() / rows["genuine"].to_numpy()
            hits = int((abs(ratio - 1) <= FORMAT_BAND).sum() if kind.startswith("format: ")
                       else (rows["genuine"] > rows["quality"]).sum())
            median = float(pd.Series(ratio).median())
            print(f"| {kind} | {len(rows)} | {hits} ({hits / len(rows):.0%}) | {median:.3f} |", flush=True)
            if kind in SALAD_MODES:
                judged = rows[[_judges_order(language) for language in rows["genuine_language"]]]
                hits = int((judged["genuine"] > judged["quality"]).sum())
                print(f"| {kind}, in languages the model judges (the tests' bar) | {len(judged)} | "
                      f"{hits} ({hits / max(1, len(judged)):.0%}) | – |", flush=True)
    return frames["GPT-4"]


#: word salad is judged only in languages the model under test knows (metrics/scorers.py: `order_mark`)
SALAD_MODES = ("word salad", "salad after opening")


@functools.cache
def _fluency() -> Any:
    """The embedded model's word-order judge, loaded once."""
    from pytest_steer.metrics.scorers import Fluency
    from pytest_steer.models import load_model

    loaded = load_model("embedded")
    return Fluency(loaded.model, loaded.tokenizer)


def _judges_order(language: str | None) -> bool:
    """Whether the embedded model judges word order in `language` (it cannot tell salad from prose otherwise)."""
    return _fluency().order_mark(language) is not None


def compliance_table(gpt4: pd.DataFrame) -> None:
    """Per instruction type: GPT-4's compliant answers that score below 0.5."""
    from tests.quality_pairs import gpt4_answers

    types = {c.key: c.instruction_id_list for c, _, ok in gpt4_answers() if ok}
    genuine = gpt4[gpt4["kind"] == "genuine"].assign(type=lambda f: f["key"].map(types)).explode("type")
    table = genuine.groupby("type")["quality"].agg(n="size", below=lambda q: int((q < 0.5).sum()), median="median")
    table = table.sort_values(["below", "n"], ascending=[False, False])
    judged = table[table["n"] >= 5]
    over = judged[judged["below"] > 0.1 * judged["n"]]
    print(f"compliant GPT-4 answers: {len(genuine['key'].unique())}, below 0.5: "
          f"{int((gpt4[gpt4['kind'] == 'genuine']['quality'] < 0.5).sum())}; types with >= 5 answers: {len(judged)}, "
          f"over 10% below 0.5: {len(over)}")
    print("| instruction type | compliant answers | below 0.5 | median |")
    print("|---|---|---|---|")
    for name, row in table.iterrows():
        print(f"| `{name}` | {int(row['n'])} | {row['below'] / row['n']:.0%} | {row['median']:.2f} |")


def people_table() -> None:
    """PandaLM's pairs: agreement of the headline and of "prefer the longer answer" with the annotators."""
    from pytest_steer import score_responses
    from tests.quality_pairs import agreement, pandalm_pairs

    pairs = pandalm_pairs()
    prompts = [str(p["prompt"]) for p in pairs]
    first, second = [str(p["response_1"]) for p in pairs], [str(p["response_2"]) for p in pairs]
    quality = score_responses(prompts + prompts, first + second, batch_size=32, fluency=False)["quality"].tolist()
    preferred = [int(str(p["preferred"])) for p in pairs]
    n = len(pairs)
    ties = sum(a == b for a, b in zip(quality[:n], quality[n:], strict=True))
    print(f"PandaLM: {n} pairs with a unanimous human preference; the headline ties on {ties}")
    print("| judge | agrees with the people |")
    print("|---|---|")
    print(f"| offline headline | {agreement(quality[:n], quality[n:], preferred):.1%} |")
    words = [float(len(r.split())) for r in first + second]
    print(f"| prefer the longer answer (words) | {agreement(words[:n], words[n:], preferred):.1%} |")


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
    ap.add_argument("--gpt4-step", type=int, default=1,
                    help="GPT-4 failure modes from every N-th compliant answer (default 1: all; the tests: 6)")
    args = ap.parse_args()
    if not args.skip_pairs:
        compliance_table(pair_table(args.gpt4_step))
        people_table()
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
