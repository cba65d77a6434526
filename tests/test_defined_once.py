"""Each fixed list is named once (a Literal, and tuples derived from it) and what is keyed by one
covers it whole: statuses, backends, kernels, unmasking algorithms, architectures."""

from __future__ import annotations

import re
from typing import Literal, get_args

import pytest

from dg_chat import config, store
from dg_chat.cli import build_parser
from dg_chat.config import ConfigError
from dg_chat.engine import loader, mask_sampling
from dg_chat.engine.backends import llama, llama_lib
from dg_chat.gguf.architectures import MASK_ARCHITECTURES, MOE_MASK_ARCHITECTURES
from dg_chat.gguf.summary import MASK_DIFFUSION_ARCHITECTURES

# -- message statuses ------------------------------------------------------------------------

def test_every_status_a_message_view_shows_has_its_label():
    from dg_chat.tui.widgets.message import GENERATING, STATUS_LABELS, ViewStatus, status_label

    assert set(STATUS_LABELS) == set(get_args(ViewStatus)) == {*store.STATUSES, GENERATING}
    assert status_label("failed", "out of memory") == "failed: out of memory"
    assert status_label("partial") == "interrupted" and status_label("complete") == ""


def test_the_schema_allows_exactly_the_statuses():
    check = re.search(r"CHECK \(status IN \(([^)]*)\)\)", store.MIGRATIONS[0])
    assert check is not None
    assert tuple(re.findall(r"'(\w+)'", check.group(1))) == store.STATUSES


def test_incomplete_is_every_status_but_complete():
    assert store.INCOMPLETE == set(store.STATUSES) - {"complete"}
    assert (store.finished_status(True), store.finished_status(False)) == ("stopped", "complete")


# -- settings choices ------------------------------------------------------------------------

def _choices(option: str) -> tuple[str, ...]:
    action = next(a for a in build_parser()._actions if option in a.option_strings)
    return tuple(action.choices)


def test_the_command_line_offers_the_settings_choices():
    assert _choices("--backend") == config.BACKENDS == ("auto", *config.BACKEND_NAMES)
    assert _choices("--kernels") == config.KERNELS


def test_the_algorithms_are_the_families_algorithms():
    families = (*config.LLADA_ALGORITHMS, *config.DREAM_ALGORITHMS, *config.RND1_ALGORITHMS)
    assert families == get_args(config.Algorithm)
    assert config.MASK_ALGORITHMS == ("auto", *families)


def test_every_fixed_choice_setting_is_range_checked_against_its_type():
    literal = {name: get_args(hint) for name, hint in config.LEAF_TYPES.items()
               if getattr(hint, "__origin__", None) is Literal}
    assert literal == {"backend": config.BACKENDS, "kernels": config.KERNELS, "algorithm": config.MASK_ALGORITHMS}
    for name, choices in literal.items():
        ok, _message = config.RANGES[name]
        assert all(ok(choice) for choice in choices) and not ok("bogus")


@pytest.mark.parametrize("value, hint, expected", [
    ("7", int, 7), ("none", int | None, None), ("", int | None, None), (None, int | None, None), (3, int | None, 3),
    ("off", bool, False), ("YES", bool, True), ("0.5", float, 0.5), (2, float, 2.0),
    ("torch", config.BackendChoice, "torch"),
    ({"stop": "ctrl+c"}, dict[str, str], {"stop": "ctrl+c"}),
])
def test_coerce_decides_on_resolved_types(value, hint, expected):
    assert config._coerce(value, hint, "here") == expected


@pytest.mark.parametrize("value, hint, message", [
    ("x", int, "here: expected an integer, got 'x'"), ("none", int, "here: expected an integer, got 'none'"),
    (None, bool, "here: expected true or false, got None"),
    (True, int | None, "here: expected an integer or none, got True"),
    (3, config.BackendChoice, "here: expected one of auto, torch, llama, got 3"),
    ({"stop": 1}, dict[str, str], "here: expected a table of text, got {'stop': 1}"),
])
def test_coerce_names_the_expected_type(value, hint, message):
    with pytest.raises(ConfigError) as info:
        config._coerce(value, hint, "here")
    assert str(info.value) == message


def test_a_type_without_a_conversion_is_a_programming_error():
    with pytest.raises(TypeError, match="no conversion"):
        config._coerce(1.0, complex, "here")


# -- backends and architectures --------------------------------------------------------------

def test_the_loader_opens_every_backend():
    assert tuple(loader.OPENERS) == config.BACKEND_NAMES


def test_what_is_keyed_by_architecture_covers_them_all():
    assert set(mask_sampling.FAMILY_ALGORITHM) == set(MASK_ARCHITECTURES)
    assert set(mask_sampling.FAMILY_ALGORITHM.values()) <= set(get_args(config.Algorithm))
    assert set(llama.CANVAS_LENGTHS) == set(MASK_ARCHITECTURES) == llama_lib.LLAMA_ARCHITECTURES
    assert MASK_DIFFUSION_ARCHITECTURES == set(MASK_ARCHITECTURES)
    assert MOE_MASK_ARCHITECTURES <= MASK_DIFFUSION_ARCHITECTURES
