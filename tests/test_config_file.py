"""Saving defaults into the config file keeps the user's other lines and comments."""

from __future__ import annotations

from dg_chat.config import load_settings
from dg_chat.config_file import save_defaults, set_values


def test_set_values_replaces_adds_and_removes_keys_in_place():
    lines = ["# my config", 'model = "demo"', "", "[sampler]", "max_steps = 48  # fast", "seed = 3", "", "[ui]",
             'theme = "nord"']
    assert set_values(lines, "sampler", {"max_steps": 12, "t_max": 0.5, "seed": None}) == [
        "# my config", 'model = "demo"', "", "[sampler]", "max_steps = 12", "t_max = 0.5", "", "[ui]",
        'theme = "nord"']
    assert set_values(lines, None, {"system_prompt": 'Be "brief".\nThanks'})[2] == \
        'system_prompt = "Be \\"brief\\".\\nThanks"'


def test_save_defaults_writes_a_file_the_config_loader_reads(tmp_path):
    path = tmp_path / "config" / "config.toml"
    save_defaults({None: {"system_prompt": "Hi ✓"}, "sampler": {"thinking": True, "eps": 1e-5, "seed": None}},
                  path)
    settings = load_settings(path=path, environ={})
    assert (settings.system_prompt, settings.sampler.thinking, settings.sampler.eps) == ("Hi ✓", True, 1e-5)
