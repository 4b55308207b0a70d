"""Option parsing and precedence (CLI > marker > ini > default), device mapping for xdist workers."""

from __future__ import annotations

import argparse

import pytest

from pytest_steer.models import split_cpu_threads, worker_device
from pytest_steer.options import (
    SEED_TYPES, parse_alphas, parse_batch_size, parse_layers, parse_types, resolve, spec_from,
)
from pytest_steer.session import resolve_layers


def test_parse_alphas():
    assert parse_alphas("5, 10,20,10") == (5.0, 10.0, 20.0)
    assert parse_alphas("0.01") == (0.01,)
    for bad in ("0", "-1", "1", "inf", "x", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_alphas(bad)


def test_parse_layers_and_resolve_them():
    assert parse_layers("8-10,12") == [8, 9, 10, 12]
    assert parse_layers('{"3": [0, 1]}') == {3: [0, 1]}
    assert parse_layers("middle") == "middle"
    with pytest.raises(argparse.ArgumentTypeError, match="cannot read layers"):
        parse_layers("8-x")
    assert resolve_layers("middle", 28) == list(range(8, 24))  # the seed study's layers on Qwen2.5-1.5B
    assert resolve_layers("all", 3) == [0, 1, 2]
    spec = spec_from({"layers": {3: [0, 1]}})
    assert hash(spec) and resolve_layers(spec.layers, 30) == {3: [0, 1]}


def test_types_and_batch_size():
    assert parse_types("seed") == SEED_TYPES and parse_types("all") == ()
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
    with pytest.raises(ValueError, match="unknown keyword"):
        resolve(lambda n: None, lambda n: None, {"model": "x"})  # process-wide options are not per test


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
