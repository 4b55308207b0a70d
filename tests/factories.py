"""Synthetic results tables for the statistics, gates and report tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pytest_steer.results import BASELINE, ResultRow, to_frame


def make_frame(follow: dict[str, np.ndarray], quality: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """A results table: `follow[config]` is an (examples, trials) bool array, `quality` alike floats.

    loose_follow_all is follow_all or-ed with "even example", so it differs from the strict metric.
    """
    rows = []
    for config, f in follow.items():
        alpha = None if config == BASELINE else float(config.removeprefix("alpha"))
        q = np.zeros(f.shape) if quality is None else quality[config]
        for e, t in np.ndindex(f.shape):
            strict, loose = bool(f[e, t]), bool(f[e, t]) or e % 2 == 0
            rows.append(
                ResultRow(
                    key=f"case{e:03d}",
                    instruction_id_list=["punctuation:no_comma"],
                    config=config,
                    alpha=alpha,
                    trial=t,
                    seed=1000 * e + t,
                    prompt="Write without commas.",
                    response="ok",
                    n_tokens=2,
                    finish_reason="stop",
                    follow_all=strict,
                    follow_list=[strict],
                    loose_follow_all=loose,
                    loose_follow_list=[loose],
                    quality=float(q[e, t]),
                    quality_name="fluency",
                )
            )
    return to_frame(rows)
