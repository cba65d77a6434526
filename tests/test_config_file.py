"""Saving defaults into the config file keeps the user's other lines and comments, whatever TOML they wrote."""

from __future__ import annotations

import pytest

from dg_chat.config import ConfigError, load_settings
from dg_chat.config_file import save_defaults, with_values

MINE = '''# my config
model = "demo"

[sampler]
max_steps = 48  # fast
seed = 3

[ui]
theme = "nord"
'''


def test_keys_are_replaced_added_and_removed_in_place():
    assert with_values(MINE, {"sampler": {"max_steps": 12, "t_max": 0.5, "seed": None}}) == MINE.replace(
        "max_steps = 48  # fast\nseed = 3\n", "max_steps = 12  # fast\nt_max = 0.5\n")
    assert 'system_prompt = "Be \\"brief\\".\\nThanks"\n' in with_values(MINE, {None: {"system_prompt":
                                                                                      'Be "brief".\nThanks'}})


@pytest.mark.parametrize("text", [
    'system_prompt = """\nYou are terse.\n[rules]: no emojis\n"""\n\n[sampler]\nmax_steps = 30\n',
    "sampler.max_steps = 30\n",
    "sampler = { max_steps = 30 }\n",
    "",
], ids=["a multi-line string", "dotted keys", "an inline table", "no file"])
def test_every_form_of_toml_stays_a_config_the_loader_reads(tmp_path, text):
    path = tmp_path / "config" / "config.toml"
    if text:
        path.parent.mkdir()
        path.write_text(text, encoding="utf-8")
    save_defaults({None: {"system_prompt": "Hi ✓ \x7f"}, "sampler": {"thinking": True, "eps": 1e-5, "seed": None}},
                  path)
    settings = load_settings(path=path, environ={})
    assert (settings.system_prompt, settings.sampler.thinking, settings.sampler.eps) == ("Hi ✓ \x7f", True, 1e-5)
    assert settings.sampler.max_steps == (30 if text else 48)  # the user's other keys are kept


@pytest.mark.parametrize("text, why", [
    ("sampler = 3\n", "'sampler' is not a table"),
    ("[sampler\n", "it is not valid TOML"),
])
def test_a_file_that_cannot_be_edited_is_left_as_it_was(tmp_path, text, why):
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        save_defaults({"sampler": {"thinking": True}}, path)
    assert str(info.value).startswith(f"{path}: cannot save the defaults: {why}") and "\n" not in str(info.value)
    assert path.read_text(encoding="utf-8") == text


def test_a_file_with_crlf_line_ends_keeps_them(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b'# mine\r\nsystem_prompt = "old"\r\n[sampler]\r\nmax_steps = 20 # keep\r\n')
    save_defaults({None: {"system_prompt": "new"}, "sampler": {"max_steps": 33}}, path)
    assert path.read_bytes() == b'# mine\r\nsystem_prompt = "new"\r\n[sampler]\r\nmax_steps = 33 # keep\r\n'
