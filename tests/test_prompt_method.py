"""Prompt emphasis: the variants render the documented messages; bad variants are refused by name."""

from __future__ import annotations

import contextlib

import pytest

from pytest_steer.methods import PrepareContext, SteeringError, build_method, config
from pytest_steer.methods.prompt import PromptEmphasis
from pytest_steer.spec import RunSpec
from pytest_steer.tasks.ifeval import ifeval_case

CASE = ifeval_case("k", "Write a poem about rain. Do not use the word wet. End with 'Bye'.",
            ("Do not use the word wet.", "End with 'Bye'."), ("keywords:forbidden_words", "startend:end_checker"),
            ({}, {}))
SYSTEM = ("Follow these instructions in the user's request exactly:\n"
          "- Do not use the word wet.\n- End with 'Bye'.")
RESTATED = CASE.prompt + "\n\nImportant: Do not use the word wet. End with 'Bye'."
MARKED = "Write a poem about rain. *Do not use the word wet.* *End with 'Bye'.*"


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("none", [{"role": "user", "content": CASE.prompt}]),
        (None, [{"role": "user", "content": CASE.prompt}]),
        ("restate", [{"role": "user", "content": RESTATED}]),
        ("system", [{"role": "system", "content": SYSTEM}, {"role": "user", "content": CASE.prompt}]),
        ("both", [{"role": "system", "content": SYSTEM}, {"role": "user", "content": RESTATED}]),
        ("marked", [{"role": "user", "content": MARKED}]),
    ],
)
def test_variants_render_as_documented(variant, expected):
    assert PromptEmphasis().render(CASE, variant) == expected


def test_values_labels_and_strength():
    m = build_method("prompt", RunSpec())
    assert isinstance(m, PromptEmphasis)
    assert (m.name, m.param, m.noop) == ("prompt", "variant", "none")
    assert [m.check(v) for v in ("none", "restate", " system ", "both", "marked")] == [
        "none", "restate", "system", "both", "marked"]
    assert [m.strength(v) for v in ("none", "restate", "system", "both", "marked")] == [0.0, 1.0, 1.0, 2.0, 1.0]
    assert config(m, "restate", ["restate", "system"]).label == "prompt-restate"
    assert m.identity()["method"] == "prompt"


@pytest.mark.parametrize(("value", "hint"), [
    ("restat", "; did you mean 'restate'?"), ("sytem", "; did you mean 'system'?"), ("loud", ""), (3, ""), (None, ""),
])
def test_bad_variant_names_the_choices_and_the_nearest(value, hint):
    with pytest.raises(SteeringError) as err:
        PromptEmphasis().check(value)
    assert str(err.value) == f"prompt variant {value!r} is not one of restate, system, both, marked (or none){hint}"


def test_prepare_needs_instructions_and_steer_does_nothing(embedded):
    m = PromptEmphasis()
    orig = ifeval_case("orig", "Say hi.", None, ("keywords:forbidden_words",), ({},))
    with pytest.raises(SteeringError, match="case 'orig' offers no text to restate"):
        m.prepare(PrepareContext(model=embedded, steered=[CASE, orig], held_out=()))
    m.prepare(PrepareContext(model=embedded, steered=[CASE], held_out=()))
    assert isinstance(m.steer(None, None, [CASE], ["both"]), contextlib.nullcontext)  # type: ignore[arg-type]


def test_the_embedded_chat_template_keeps_its_default_system_text(embedded):
    """SmolLM2's template inserts a default system text when there is none; `system` keeps it and adds ours."""
    from pytest_steer.prompts import default_system_text, render_chat

    default = default_system_text(embedded.tokenizer)
    assert default is not None and "named SmolLM" in default
    plain = render_chat(embedded.tokenizer, PromptEmphasis().render(CASE, "restate"))
    assert plain.startswith(f"<|im_start|>system\n{default}<|im_end|>\n")
    m = PromptEmphasis()
    m.prepare(PrepareContext(model=embedded, steered=[CASE], held_out=()))
    text = render_chat(embedded.tokenizer, m.render(CASE, "both"))
    assert text.startswith(f"<|im_start|>system\n{default}\n\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{RESTATED}")
    assert text.count("<|im_start|>system") == 1
    assert m.identity()["default_system"] == default != PromptEmphasis().identity()["default_system"]


class _Template:
    """A chat template in miniature, with or without a default system text."""

    chat_template = "mini"

    def __init__(self, default: str | None) -> None:
        self.default = default

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        if self.default is not None and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": self.default}, *messages]
        return "".join(f"<{m['role']}>{m['content']}</>" for m in messages) + "<assistant>"


def test_default_system_text_is_found_only_where_the_template_has_one():
    from pytest_steer.prompts import default_system_text

    assert default_system_text(_Template("You are kind.")) == "You are kind."
    assert default_system_text(_Template(None)) is None
    assert default_system_text(object()) is None  # no chat template at all


def test_marked_needs_the_instruction_text_in_the_prompt(embedded):
    reworded = ifeval_case("r", "Write a poem about rain.", ("Do not use the word wet.",),
                           ("keywords:forbidden_words",), ({},))
    with pytest.raises(SteeringError, match="case 'r': instruction text not found in the prompt, so it cannot be "
                                            "marked: 'Do not use the word wet.'"):
        PromptEmphasis().prepare(PrepareContext(model=embedded, steered=[reworded], held_out=()))
