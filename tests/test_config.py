from pathlib import Path

import pytest

from dg_chat import cli
from dg_chat.config import LEAVES, RANGES, ConfigError, Settings, load_settings, settings_from_dict, settings_to_dict


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
    ('[sampler]\nmax_steps = "many"\n', "line 2, key 'sampler.max_steps': expected an integer, got 'many'"),
    ('model = "x"\ncolour = 3\n', "line 2, key 'colour': unknown setting"),
    ('[sampler]\n\nbogus = 1\n', "line 3, key 'sampler.bogus': unknown setting"),
    ('backend = "gpu"\n', "line 1, key 'backend': must be one of auto, torch, llama, not 'gpu'"),
    ('model = \n', "line 1"),
    ('[sampler]\nthinking = 1\n', "key 'sampler.thinking': expected true or false, got 1"),
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
    where = f"{path}, line 1, key 'kernels'" if where == "file" else "environment variable DG_CHAT_KERNELS"
    assert str(info.value) == f"{where}: must be one of auto, triton, reference, not 'cuda'"


def test_precedence_on_one_key_set_in_the_file_the_environment_and_a_flag(tmp_path):
    path = write(tmp_path, "[sampler]\nmax_steps = 30\n")
    assert load_settings(path=path, environ={}).sampler.max_steps == 30
    assert load_settings(path=path, environ={"DG_CHAT_MAX_STEPS": "20"}).sampler.max_steps == 20
    assert load_settings({"max_steps": 5}, path=path, environ={"DG_CHAT_MAX_STEPS": "20"}).sampler.max_steps == 5
    assert load_settings({"max_steps": None}, path=path, environ={"DG_CHAT_MAX_STEPS": "20"}).sampler.max_steps == 20


def test_precedence_through_dg_chat_ask(tmp_path, monkeypatch, isolated_dirs):
    config = isolated_dirs / "config" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[sampler]\nmax_steps = 30\n")
    monkeypatch.setenv("DG_CHAT_MAX_STEPS", "20")
    seen = []

    def fake_load_engine(settings):
        seen.append(settings.sampler.max_steps)
        raise ConfigError("stop here")

    # ask's own name first: importing ask binds the loader's, which must still be the real one then
    monkeypatch.setattr("dg_chat.commands.ask.load_engine", fake_load_engine)
    monkeypatch.setattr("dg_chat.engine.loader.load_engine", fake_load_engine)
    assert cli.main(["ask", "hi", "--steps", "5"]) == 1
    assert cli.main(["--steps", "7", "ask", "hi"]) == 1  # a flag before the command counts too
    assert cli.main(["ask", "hi"]) == 1
    assert seen == [5, 7, 20]


BAD_VALUES = {"backend": "gpu", "kernels": "cuda", "max_steps": 0, "max_canvases": 0, "entropy_bound": -0.1,
              "t_max": 0.0, "t_min": -1.0, "stability": -1, "confidence": -1.0, "temperature": -0.5,
              "algorithm": "bogus", "top_p": 0.0, "top_k": -1, "alg_temp": -1.0, "eps": 1.0, "canvas_fps": 0,
              "seed": -2**63 - 1, "device": "tpu"}


def test_every_range_check_is_covered():
    assert set(BAD_VALUES) == set(RANGES)


def toml_value(value) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_every_range_check_names_file_line_and_key(tmp_path, name):
    section = LEAVES[name][0]
    value = BAD_VALUES[name]
    header = f"[{section}]\n" if section else ""
    path = write(tmp_path, f'model = "demo"\n{header}{name} = {toml_value(value)}\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path=path, environ={})
    line = 3 if section else 2
    dotted = f"{section}.{name}" if section else name
    assert str(info.value).startswith(f"{path}, line {line}, key '{dotted}': must ")
    with pytest.raises(ConfigError) as info:
        load_settings(path=write(tmp_path, ""), environ={f"DG_CHAT_{name.upper()}": str(value)})
    assert str(info.value).startswith(f"environment variable DG_CHAT_{name.upper()}: must ")


@pytest.mark.parametrize("name, value, message", [
    ("seed", 2**64, "must be from -2**63 to 2**64 - 1"),  # more than torch's generators take
    ("t_max", 1e39, "must be in (0, 100]"),  # past float32: the tempered logits would overflow
    ("temperature", 101.0, "must be in [0, 100]"),
])
def test_values_past_what_the_sampler_can_use_are_refused(name, value, message):
    with pytest.raises(ConfigError) as info:
        load_settings({name: value}, environ={})
    assert str(info.value).endswith(message)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_a_number_must_be_finite(tmp_path, value):
    path = write(tmp_path, f"[sampler]\nentropy_bound = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path=path, environ={})
    assert str(info.value) == f"{path}, line 2, key 'sampler.entropy_bound': expected a finite number, got {value}"
    with pytest.raises(ConfigError) as info:
        load_settings(path=write(tmp_path, ""), environ={"DG_CHAT_ENTROPY_BOUND": value})
    assert "DG_CHAT_ENTROPY_BOUND: expected a finite number" in str(info.value)


def test_the_issue_example_and_a_flag(tmp_path):
    path = write(tmp_path, "[sampler]\nmax_steps = 0\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path=path, environ={})
    assert str(info.value) == f"{path}, line 2, key 'sampler.max_steps': must be from 1 to 10000"
    with pytest.raises(ConfigError) as info:
        load_settings({"max_steps": 0}, environ={})
    assert str(info.value) == "option --steps: must be from 1 to 10000"
    with pytest.raises(ConfigError) as info:  # past int32, the sampler's step count overflowed
        load_settings(environ={"DG_CHAT_MAX_STEPS": "2147483648"})
    assert str(info.value) == "environment variable DG_CHAT_MAX_STEPS: must be from 1 to 10000"


def test_temperatures_out_of_order_name_where_t_min_came_from(tmp_path):
    path = write(tmp_path, "[sampler]\nt_max = 0.5\nt_min = 0.6\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path=path, environ={})
    assert str(info.value) == f"{path}, line 3, key 'sampler.t_min': needs t_min <= t_max (t_min 0.6, t_max 0.5)"


@pytest.mark.parametrize("spec, problem", [
    ("ctrl+nonsense+key", "'nonsense' is not a modifier"),
    ("ctrl+", "names no key"),
    ("bogus", "'bogus' is not a key name"),
])
def test_an_unusable_key_in_the_keymap_names_file_line_and_binding(tmp_path, spec, problem):
    path = write(tmp_path, f'[ui]\ncanvas_fps = 20\n[ui.keymap]\nstop = "escape"\nregenerate = "{spec}"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path=path, environ={})
    assert str(info.value).startswith(f"{path}, line 5, key 'ui.keymap.regenerate': '{spec}' is not a usable key: ")
    assert problem in str(info.value)


@pytest.mark.parametrize("spec", ["f5", "ctrl+r", "ctrl+shift+up", "question_mark", "a", "ctrl+c,escape", "pageup"])
def test_usable_keys_pass(tmp_path, spec):
    path = write(tmp_path, f'[ui.keymap]\nregenerate = "{spec}"\n')
    assert load_settings(path=path, environ={}).ui.keymap == {"regenerate": spec}


def test_a_saved_unusable_key_names_the_saved_setting():
    with pytest.raises(ConfigError, match=r"^saved setting ui.keymap, binding 'stop': 'ctrl\+nonsense' is not"):
        settings_from_dict({"ui": {"keymap": {"stop": "ctrl+nonsense"}}})


@pytest.mark.parametrize(("where", "expected"), [  # (the file: test_every_range_check_names_file_line_and_key)
    ("environment", "environment variable DG_CHAT_DEVICE: must be auto, cpu, cuda or cuda:N, not 'tpu'"),
    ("option", "option --device: must be auto, cpu, cuda or cuda:N, not 'tpu'"),
])
def test_an_unknown_device_names_where_it_was_set(tmp_path, where, expected):
    path = tmp_path / "none.toml"
    environ = {"DG_CHAT_DEVICE": "tpu"} if where == "environment" else {}
    with pytest.raises(ConfigError) as error:
        load_settings({"device": "tpu"} if where == "option" else None, path=path, environ=environ)
    assert str(error.value) == expected
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        assert load_settings({"device": device}, path=path, environ={}).device == device
