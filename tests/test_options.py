"""Option parsing and precedence (CLI > marker > ini > default), config labels, xdist device mapping."""

from __future__ import annotations

import argparse

import pytest

from pytest_steer.methods import SteeringError
from pytest_steer.methods.actadd import ActivationSteering
from pytest_steer.methods.pasta import PASTA
from pytest_steer.methods.prompt import PromptEmphasis
from pytest_steer.models import split_cpu_threads, worker_device
from pytest_steer.options import (
    MarkerError,
    parse_batch_size,
    parse_layers,
    parse_methods,
    parse_positive_int,
    parse_quality,
)
from pytest_steer.spec import RunSpec, resolve, spec_from
from pytest_steer.tasks import SEED_INSTRUCTION_TYPES, parse_types

parse_alphas, parse_coefficients, parse_variants = (m.grid.parse for m in (PASTA, ActivationSteering, PromptEmphasis))


def test_parse_alphas_accepts_text_and_lists_and_refuses_repeats():
    assert parse_alphas("5, 10,20") == (5.0, 10.0, 20.0) == parse_alphas([5, 10, 20])
    assert parse_alphas("0.01") == (0.01,)
    for bad in ("0", "-1", "1", "inf", "nan", "x", "", [True]):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_alphas(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="alpha 1 is the unsteered baseline"):
        parse_alphas("1")
    with pytest.raises(argparse.ArgumentTypeError, match="given twice"):
        parse_alphas("10,10")


def test_one_rule_per_parameter_the_grid_option_and_the_method_agree():
    """The grid option's parser is the method's own check plus "not the no-op": they cannot disagree."""
    for method, good, noop in ((PASTA(), "0.5", 1.0), (ActivationSteering(), "-2", 0.0),
                               (PromptEmphasis(), "marked", "none")):
        assert method.grid.parse(good) == (method.check(good),)
        assert method.check(noop) == noop  # a valid value (steer() may be handed it) ...
        with pytest.raises(argparse.ArgumentTypeError, match="unsteered baseline"):
            method.grid.parse(str(noop))  # ... but never a grid point: the baseline is always there
        with pytest.raises(SteeringError, match="unsteered baseline"):
            RunSpec(methods=(method.name,), **{method.grid.name: (noop,)}).configs()


def test_method_value_parsers():
    assert parse_coefficients("1,-2") == (1.0, -2.0)
    with pytest.raises(argparse.ArgumentTypeError, match="coefficient 0"):
        parse_coefficients("0")
    assert parse_variants(["restate", "both"]) == ("restate", "both")
    with pytest.raises(argparse.ArgumentTypeError, match="did you mean 'restate'"):
        parse_variants("restat")
    assert parse_methods("pasta,prompt") == ("pasta", "prompt")
    with pytest.raises(argparse.ArgumentTypeError, match="given twice"):
        parse_methods("pasta,pasta")
    with pytest.raises(SteeringError, match="did you mean 'actadd'"):  # checked when the grid is built
        RunSpec(methods=("actad",)).configs()


def test_parse_layers():
    assert parse_layers("8-10,12") == (8, 9, 10, 12) == parse_layers([8, 9, 10, 12])
    assert parse_layers('{"3": [0, 1]}') == ((3, (0, 1)),) == parse_layers({3: [0, 1]})
    assert parse_layers("middle") == "middle"
    with pytest.raises(argparse.ArgumentTypeError, match="cannot read layers"):
        parse_layers("8-x")
    with pytest.raises(argparse.ArgumentTypeError, match="'5-2' runs backwards"):
        parse_layers("5-2")


def test_a_huge_layer_range_is_refused_at_once():
    """Probe of issue 29: `--steer-layers 0-100000000` built the list of every index in it, a MemoryError after
    gigabytes and seconds instead of one line; a range is bounded by the input now, like a list."""
    with pytest.raises(argparse.ArgumentTypeError, match="'0-100000000' ends past layer 9999; no model has"):
        parse_layers("0-100000000")
    assert len(parse_layers("0-9999")) == 10_000


def test_trials_and_grids_are_bounded() -> None:
    """Probe of issue 29: `--steer-trials 100000000` ran out of memory in collection after a minute, and
    20,000 alphas took minutes to collect; both are refused in one line that says why."""
    from pytest_steer.options import MAX_GRID_VALUES, MAX_TRIALS, grid_parser, parse_trials

    assert parse_trials("10") == 10 and parse_trials(MAX_TRIALS) == MAX_TRIALS
    with pytest.raises(argparse.ArgumentTypeError, match=r"^100000000 trials are more than 1000: .*3 to 10 trials"):
        parse_trials("100000000")
    alphas = grid_parser("alpha", float, 0.0, "5,10")
    assert len(alphas(",".join(str(i) for i in range(1, MAX_GRID_VALUES + 1)))) == MAX_GRID_VALUES
    with pytest.raises(argparse.ArgumentTypeError, match=r"^20000 alpha values are more than 256: .*sweep fewer"):
        alphas(",".join(str(i) for i in range(1, 20_001)))


def test_ints_refuse_bools_and_fractions():
    assert parse_positive_int("3") == 3 == parse_positive_int(3)
    for bad in (True, 2.5, "2.5", 0, "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_positive_int(bad)


def test_quality_typos_are_caught_before_any_network():
    assert parse_quality("offline") == "offline"
    assert parse_quality("OpenAssistant/reward-model-deberta-v3-large-v2").startswith("OpenAssistant")
    with pytest.raises(argparse.ArgumentTypeError, match="did you mean 'fluency'"):
        parse_quality("fluencyy")


def test_types_and_batch_size():
    assert parse_types("seed") == SEED_INSTRUCTION_TYPES and parse_types("all") == ()
    assert parse_types("a:b, c:d") == ("a:b", "c:d")
    assert parse_batch_size("auto") == "auto" and parse_batch_size("8") == 8
    with pytest.raises(argparse.ArgumentTypeError):
        parse_batch_size("0")


def test_precedence_cli_over_marker_over_ini_over_default():
    ini = {"alphas": "3,4", "trials": "7"}
    got = resolve(lambda n: {"trials": 2}.get(n), lambda n: ini.get(n), {"alphas": [9], "per_type": 5})
    assert got["trials"] == 2  # CLI beats ini
    assert got["alphas"] == (9.0,)  # marker beats ini
    assert got["per_type"] == 5  # marker beats default
    assert got["max_new_tokens"] == 96  # default
    got = resolve(lambda n: None, lambda n: ini.get(n), {})
    assert got["alphas"] == (3.0, 4.0) and got["trials"] == 7


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (([5, 10],), {}, "keywords only, got positional [5, 10]"),
    ((), {"alpahs": [5]}, "unknown keyword 'alpahs'; did you mean 'alphas'?"),
    ((), {"model": "x"}, "unknown keyword 'model'"),  # process-wide options are not per test
    ((), {"alphas": "ten"}, "alphas='ten'"),
    ((), {"alphas": [0, -2]}, "alpha 0 must be > 0"),
    ((), {"trials": 2.5}, "trials=2.5"),
    ((), {"trials": True}, "trials=True"),
])
def test_marker_errors_name_the_keyword_and_value(args, kwargs, message):
    with pytest.raises(MarkerError) as info:
        resolve(lambda n: None, lambda n: None, kwargs, args)
    assert message in str(info.value)


def test_configs_have_unique_labels_for_distinct_values():
    spec = RunSpec(methods=("pasta", "actadd", "prompt"), alphas=(10.0, 10.0000001), actadd_coefs=(4.0,),
                   prompt_variants=("restate",))
    labels = [c.label for c in spec.configs()]
    assert labels == ["baseline", "pasta-alpha10", "pasta-alpha10.0000001", "actadd-c4", "prompt-restate"]
    assert len(set(labels)) == len(labels)
    assert spec.config("actadd-c4").value == 4.0 and spec.config("pasta-alpha10").strength > 0
    with pytest.raises(KeyError, match="there are baseline"):
        spec.config("pasta-alpha11")


def test_spec_is_hashable_and_keyed_by_settings():
    a = spec_from(resolve(lambda n: None, lambda n: None, {"layers": {3: [0, 1]}}))
    b = spec_from(resolve(lambda n: None, lambda n: None, {"layers": "3-4"}))
    assert hash(a) and hash(b) and a.key() != b.key()
    assert spec_from(resolve(lambda n: None, lambda n: None, {"include_baseline": False})).key() == RunSpec().key()


def test_worker_device_mapping(monkeypatch):
    assert [worker_device("cuda:0,cuda:1", i) for i in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert [worker_device("auto", i) for i in range(4)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert worker_device("auto", 1) == "cpu"
    with pytest.raises(ValueError):
        worker_device(" , ", 0)


def test_cpu_threads_are_split_between_workers(monkeypatch):
    import os

    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    try:
        assert split_cpu_threads(3) == 2 and torch.get_num_threads() == 2
        assert split_cpu_threads(16) == 1
    finally:
        torch.set_num_threads(before)
