from pathlib import Path

import pytest

from dg_chat.config import ConfigError, Settings, load_settings, settings_from_dict, settings_to_dict


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_reference_generation_config():
    s = load_settings(environ={})
    assert (s.sampler.max_steps, s.sampler.entropy_bound, s.sampler.t_max, s.sampler.t_min) == (48, 0.1, 0.8, 0.4)
    assert (s.sampler.stability, s.sampler.confidence) == (1, 0.005)
    assert s.backend == "auto" and s.sampler.thinking is False


def test_precedence_file_then_env_then_flags(tmp_path):
    path = write(tmp_path, 'model = "from-file"\nbackend = "torch"\n[sampler]\nmax_steps = 30\nseed = 1\n')
    s = load_settings({"seed": 9}, path=path, environ={"DG_CHAT_MAX_STEPS": "20", "DG_CHAT_MODEL": "from-env"})
    assert s.model == "from-env"
    assert s.backend == "torch"
    assert s.sampler.max_steps == 20
    assert s.sampler.seed == 9


def test_keymap_and_ui_section(tmp_path):
    path = write(tmp_path, '[ui]\ncanvas_fps = 20\n[ui.keymap]\nstop = "ctrl+c"\n')
    s = load_settings(path=path, environ={})
    assert s.ui.canvas_fps == 20 and s.ui.keymap == {"stop": "ctrl+c"}


@pytest.mark.parametrize("text, expected", [
    ('[sampler]\nmax_steps = "many"\n', "line 2, key 'sampler.max_steps': expected int"),
    ('model = "x"\ncolour = 3\n', "line 2, key 'colour': unknown setting"),
    ('[sampler]\n\nbogus = 1\n', "line 3, key 'sampler.bogus': unknown setting"),
    ('backend = "gpu"\n', "backend must be one of"),
    ('model = \n', "line 1"),
    ('[sampler]\nthinking = 1\n', "key 'sampler.thinking': expected bool"),
])
def test_malformed_file_gives_one_line_naming_file_line_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path=path, environ={})
    message = str(info.value)
    assert expected in message and "\n" not in message
    if "line" in expected:
        assert str(path) in message


def test_bad_environment_value_is_named():
    with pytest.raises(ConfigError, match="DG_CHAT_SEED"):
        load_settings(environ={"DG_CHAT_SEED": "abc"})


def test_round_trip_through_dict():
    s = Settings()
    s.sampler.max_steps = 12
    s.ui.keymap = {"send": "ctrl+s"}
    assert settings_from_dict(settings_to_dict(s)) == s


def test_kernels_from_file_env_and_flags(tmp_path):
    assert load_settings(environ={}).kernels == "auto"
    path = write(tmp_path, 'kernels = "reference"\n')
    assert load_settings(path=path, environ={}).kernels == "reference"
    assert load_settings(path=path, environ={"DG_CHAT_KERNELS": "triton"}).kernels == "triton"
    assert load_settings({"kernels": "auto"}, path=path, environ={"DG_CHAT_KERNELS": "triton"}).kernels == "auto"


@pytest.mark.parametrize("where", ["file", "env"])
def test_unknown_kernels_is_one_line_listing_the_choices(tmp_path, where):
    path = write(tmp_path, 'kernels = "cuda"\n' if where == "file" else "")
    with pytest.raises(ConfigError) as info:
        load_settings(path=path, environ={"DG_CHAT_KERNELS": "cuda"} if where == "env" else {})
    assert str(info.value) == "invalid settings: kernels must be one of auto, triton, reference, not 'cuda'"
