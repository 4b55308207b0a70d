"""Prompt emphasis: the variants render the documented messages; bad variants are refused by name."""

from __future__ import annotations

import contextlib

import pytest

from pytest_steer.cases import Case
from pytest_steer.methods import PrepareContext, SteeringError, build_method, config
from pytest_steer.methods.prompt import PromptEmphasis
from pytest_steer.options import RunSpec

CASE = Case("k", "Write a poem about rain. Do not use the word wet. End with 'Bye'.",
            ("Do not use the word wet.", "End with 'Bye'."), ("keywords:forbidden_words", "startend:end_checker"),
            ({}, {}))
SYSTEM = ("Follow these instructions in the user's request exactly:\n"
          "- Do not use the word wet.\n- End with 'Bye'.")
RESTATED = CASE.prompt + "\n\nImportant: Do not use the word wet. End with 'Bye'."


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("none", [{"role": "user", "content": CASE.prompt}]),
        (None, [{"role": "user", "content": CASE.prompt}]),
        ("restate", [{"role": "user", "content": RESTATED}]),
        ("system", [{"role": "system", "content": SYSTEM}, {"role": "user", "content": CASE.prompt}]),
        ("both", [{"role": "system", "content": SYSTEM}, {"role": "user", "content": RESTATED}]),
    ],
)
def test_variants_render_as_documented(variant, expected):
    assert PromptEmphasis().render(CASE, variant) == expected


def test_values_labels_and_strength():
    m = build_method("prompt", RunSpec())
    assert isinstance(m, PromptEmphasis)
    assert (m.name, m.param, m.noop) == ("prompt", "variant", "none")
    assert [m.check(v) for v in ("none", "restate", " system ", "both")] == ["none", "restate", "system", "both"]
    assert [m.strength(v) for v in ("none", "restate", "system", "both")] == [0.0, 1.0, 1.0, 2.0]
    assert config(m, "restate", ["restate", "system"]).label == "prompt-restate"
    assert m.identity()["method"] == "prompt"


@pytest.mark.parametrize(("value", "hint"), [
    ("restat", "; did you mean 'restate'?"), ("sytem", "; did you mean 'system'?"), ("loud", ""), (3, ""), (None, ""),
])
def test_bad_variant_names_the_choices_and_the_nearest(value, hint):
    with pytest.raises(SteeringError) as err:
        PromptEmphasis().check(value)
    assert str(err.value) == f"prompt variant {value!r} is not one of restate, system, both (or none){hint}"


def test_prepare_needs_instructions_and_steer_does_nothing(embedded):
    m = PromptEmphasis()
    orig = Case("orig", "Say hi.", None, ("keywords:forbidden_words",), ({},))
    with pytest.raises(SteeringError, match="case 'orig' has no `instructions` field"):
        m.prepare(PrepareContext(model=embedded, steered=[CASE, orig], held_out=()))
    m.prepare(PrepareContext(model=embedded, steered=[CASE], held_out=()))
    assert isinstance(m.steer(None, None, [CASE], ["both"]), contextlib.nullcontext)  # type: ignore[arg-type]


def test_the_embedded_chat_template_renders_the_system_message(embedded):
    """SmolLM2's template puts our system message in place of its default one, and the restated user turn whole."""
    from pytest_steer.prompts import render_chat

    text = render_chat(embedded.tokenizer, PromptEmphasis().render(CASE, "both"))
    assert text.startswith("<|im_start|>system\n" + SYSTEM + "<|im_end|>\n<|im_start|>user\n" + RESTATED)
    assert "SmolLM" not in text and text.count("<|im_start|>system") == 1
    assert "named SmolLM" in render_chat(embedded.tokenizer, PromptEmphasis().render(CASE, "restate"))
