"""Settings: one object shared by the CLI, the config file, the environment and the TUI.

Precedence, lowest first: the defaults below < the TOML file in the config dir < DG_CHAT_*
environment variables < command-line flags. Every leaf field has a unique name, so the
environment variable of a field is DG_CHAT_<FIELD> whatever its section (DG_CHAT_MAX_STEPS).

The file mirrors the dataclasses:

    model = "demo"
    [sampler]
    max_steps = 32
    [ui]
    canvas_fps = 20
    [ui.keymap]
    stop = "ctrl+c"
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
import typing
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from dg_chat import paths
from dg_chat.errors import DgChatError
from dg_chat.text.sanitize import well_formed


class ConfigError(DgChatError):
    """A malformed config file or setting; the message names file, line and key."""


# The fixed choices of settings, each named once: the tuples below, the CLI's choices, the settings
# screen and the range checks (RANGES) all derive from these Literals.
BackendName = Literal["torch", "llama"]
"""The engines that run a model: torch (engine/backends/torch_dg/) and llama (engine/backends/llama.py)."""
BackendChoice = Literal["auto", BackendName]
KernelsName = Literal["triton", "reference"]
"""How the PyTorch engine computes (the `kernels` setting, resolved)."""
KernelsChoice = Literal["auto", KernelsName]
LladaAlgorithm = Literal["low_confidence", "random"]
DreamAlgorithm = Literal["origin", "maskgit_plus", "topk_margin", "entropy"]
Rnd1Algorithm = Literal["rnd1"]
Algorithm = Literal[LladaAlgorithm, DreamAlgorithm, Rnd1Algorithm]
"""Unmasking algorithms of mask-token models, by the family whose reference sampler defines them."""
AlgorithmChoice = Literal["auto", Algorithm]

BACKEND_NAMES: tuple[BackendName, ...] = get_args(BackendName)
BACKENDS: tuple[BackendChoice, ...] = get_args(BackendChoice)
KERNELS: tuple[KernelsChoice, ...] = get_args(KernelsChoice)
LLADA_ALGORITHMS: tuple[LladaAlgorithm, ...] = get_args(LladaAlgorithm)
DREAM_ALGORITHMS: tuple[DreamAlgorithm, ...] = get_args(DreamAlgorithm)
RND1_ALGORITHMS: tuple[Rnd1Algorithm, ...] = get_args(Rnd1Algorithm)
MASK_ALGORITHMS: tuple[AlgorithmChoice, ...] = get_args(AlgorithmChoice)
SEED_RANGE = range(-2**63, 2**64)
"""The seeds torch's generators take."""


@dataclass
class SamplerSettings:
    """Knobs of the denoising loop; defaults are DiffusionGemma's generation_config.json."""

    max_steps: int = 48
    """Most denoising steps per canvas (the temperature schedule spans this many)."""
    entropy_bound: float = 0.1
    """Entropy budget in nats: lowest-entropy positions are accepted while their sum stays under it."""
    t_max: float = 0.8
    """Temperature of the first step."""
    t_min: float = 0.4
    """Temperature approached on the last step."""
    stability: int = 1
    """Steps the argmax canvas must stay unchanged before an early stop (0: no stability needed)."""
    confidence: float = 0.005
    """Mean entropy (nats) under which a stable canvas stops early."""
    seed: int | None = None
    """Random seed; unset means a fresh one per turn."""
    reference_draws: bool = True
    """Reference kernels: draw random numbers exactly as transformers does (same seed, same tokens).
    Off: draw only where a token is kept, by inverse CDF: same distribution, much faster on the CPU.
    (The Triton kernels always use their fused on-device sampler.)"""
    max_canvases: int = 4
    """Most canvases (blocks) per answer."""
    thinking: bool = False
    """Let the model think before answering (Gemma 4 thinking channel)."""
    algorithm: AlgorithmChoice = "auto"
    """Unmasking order of mask-token models (Dream, LLaDA, RND1): auto (the family's own), low_confidence,
    random (LLaDA), origin, maskgit_plus, topk_margin, entropy (Dream), rnd1 (RND1's entropy ranking)."""
    temperature: float = 0.0
    """Sampling temperature of mask-token models (0 = greedy)."""
    top_p: float = 1.0
    """Mask-token models: sample only from the most likely tokens whose probabilities add up to top_p (1 = off)."""
    top_k: int = 0
    """Mask-token models: sample only from the top_k most likely tokens (0 = off)."""
    alg_temp: float = 0.0
    """Dream's alg_temp: 0 unmasks the most confident positions; > 0 draws them from softmax(confidence / alg_temp)."""
    eps: float = 1e-3
    """Dream's schedule ends at time eps: steps walk linspace(1, eps, max_steps + 1)."""


@dataclass
class UISettings:
    """Options of the terminal interface."""

    theme: str = "textual-dark"
    """Textual theme name."""
    show_canvas: bool = True
    """Show the live denoising canvas while a block is refined."""
    canvas_fps: int = 30
    """Most canvas repaints per second."""
    keymap: dict[str, str] = field(default_factory=dict)
    """Key binding overrides: binding id -> key (the ids are listed in the README)."""


@dataclass
class Settings:
    """Everything a user can set; one instance per run, copied per chat."""

    model: str = ""
    """Model to run: a catalog name (demo, diffusiongemma:Q4_K_M, ...), a GGUF path, or a model on an
    OpenAI-compatible server (vLLM, a hosted endpoint, `dg-chat serve`): openai:<base-url>#<model>, e.g.
    openai:http://127.0.0.1:8000/v1#google/diffusiongemma-26B-A4B-it. Empty: the configured default, else the demo."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable that holds the API key of a remote model (openai:...); the key
    itself is read from it when connecting and is never stored, shown or logged."""
    backend: BackendChoice = "auto"
    """auto, torch (PyTorch engine) or llama (llama.cpp)."""
    device: str = "auto"
    """auto (CUDA if available, else CPU), cpu, cuda or cuda:N."""
    kernels: KernelsChoice = "auto"
    """How the PyTorch engine computes: auto (triton on CUDA, reference on the CPU); triton (the Triton
    kernels reading GGUF blocks as stored; on the CPU only under TRITON_INTERPRET=1, a slow interpreter
    for tests); reference (plain torch, dequantise when used, bit-exact with transformers)."""
    models_dir: str = ""
    """Where downloads go; empty means the shared Hugging Face cache."""
    system_prompt: str = ""
    """System prompt put before every conversation."""
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    ui: UISettings = field(default_factory=UISettings)


_SECTIONS = {"sampler": SamplerSettings, "ui": UISettings}


def _leaf_fields() -> dict[str, tuple[str | None, dataclasses.Field]]:
    """Field name -> (section or None, field) for every settable leaf."""
    out: dict[str, tuple[str | None, dataclasses.Field]] = {}
    for f in fields(Settings):
        if f.name in _SECTIONS:
            for sub in fields(_SECTIONS[f.name]):
                out[sub.name] = (f.name, sub)
        else:
            out[f.name] = (None, f)
    return out


LEAVES = _leaf_fields()


def _leaf_types() -> dict[str, Any]:
    """Field name -> its resolved type (typing.get_type_hints: classes and Literals, not annotation text)."""
    hints = {section: typing.get_type_hints(Settings if section is None else _SECTIONS[section])
             for section in (None, *_SECTIONS)}
    return {name: hints[section][name] for name, (section, _field) in LEAVES.items()}


LEAF_TYPES = _leaf_types()


def _is_union(hint: Any) -> bool:
    return get_origin(hint) in (typing.Union, types.UnionType)


_PLAIN_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "text", type(None): "none"}


def _type_name(hint: Any) -> str:
    """How an error message names a type, in words: an integer, an integer or none, a table of text,
    one of auto, torch, llama."""
    if get_origin(hint) is Literal:
        return f"one of {', '.join(map(str, get_args(hint)))}"
    if _is_union(hint):
        return " or ".join(_type_name(arg) for arg in get_args(hint))
    if get_origin(hint) is dict:
        return f"a table of {_type_name(get_args(hint)[1])}"
    return _PLAIN_NAMES.get(hint, getattr(hint, "__name__", str(hint)))


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check (and for env strings, convert) one value against its field's resolved type `hint`."""
    optional = _is_union(hint) and type(None) in get_args(hint)
    kind = next(arg for arg in get_args(hint) if arg is not type(None)) if optional else hint
    textual = kind is str or get_origin(kind) is Literal
    from_text = isinstance(value, str) and not textual
    try:
        if value is None or (optional and from_text and value.strip().lower() in ("", "none")):
            if optional:
                return None
            raise ValueError
        if get_origin(kind) is dict:
            key_type, value_type = get_args(kind)
            if not isinstance(value, dict) or not all(isinstance(k, key_type) and isinstance(v, value_type)
                                                      for k, v in value.items()):
                raise ValueError
            return dict(value)
        if kind is bool:
            if from_text:
                lowered = value.strip().lower()
                if lowered not in _TRUE + _FALSE:
                    raise ValueError
                return lowered in _TRUE
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind is int:
            if from_text:
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError
            return value
        if kind is float:
            if from_text:
                value = float(value)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError
            if not math.isfinite(value):
                raise ConfigError(f"{where}: expected a finite number, got {value!r}")
            return float(value)
        if textual:  # a Literal's choices are checked with the other ranges (RANGES), naming the origin
            if not isinstance(value, str):
                raise ValueError
            return well_formed(value)  # from the environment or the command line: maybe not Unicode
    except ValueError:
        raise ConfigError(f"{where}: expected {_type_name(hint)}, got {value!r}") from None
    raise TypeError(f"{where}: settings of type {_type_name(hint)} have no conversion")  # a new field's type


def _key_line(text: str, section: str | None, key: str) -> int | None:
    """1-based line of `key = ...` inside `[section]` (top level if None)."""
    current: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        header = re.match(r"\[\s*([^\]]+?)\s*\]$", stripped)
        if header:
            current = header.group(1)
            continue
        if current == section and re.match(rf"{re.escape(key)}\s*=", stripped):
            return number
    return None


Origins = dict[str, str]
"""Setting name -> where its value came from ("FILE, line N, key 'sampler.max_steps'", an environment
variable, an option); names missing from it hold their defaults."""


def _apply(settings: Settings, name: str, value: Any, where: str, origins: Origins) -> None:
    section = LEAVES[name][0]
    target = getattr(settings, section) if section else settings
    setattr(target, name, _coerce(value, LEAF_TYPES[name], where))
    origins[name] = where


_NAMED_KEYS = frozenset({"backspace", "delete", "down", "end", "enter", "escape", "home", "insert", "left",
                         "pagedown", "pageup", "return", "right", "space", "tab", "up", "newline",
                         *(f"f{n}" for n in range(1, 25))})
_MODIFIERS = frozenset({"ctrl", "shift", "alt", "meta", "super", "hyper"})


def key_problem(spec: str) -> str | None:
    """Why `spec` is not a Textual key ("ctrl+r", "f5", "question_mark", "ctrl+c,escape"); None if it is."""
    for key in spec.split(","):
        *modifiers, name = key.strip().split("+")
        unknown = [m for m in modifiers if m not in _MODIFIERS]
        if unknown:
            return f"'{unknown[0]}' is not a modifier ({', '.join(sorted(_MODIFIERS))})"
        if not name:
            return f"{key.strip()!r} names no key"
        if len(name) > 1 and name not in _NAMED_KEYS and not _is_character_name(name):
            return f"'{name}' is not a key name (a character, f1-f24, enter, escape, tab, space, up, ...)"
    return None


def _is_character_name(name: str) -> bool:
    """Textual names a punctuation key by its Unicode name in snake case (question_mark, full_stop)."""
    try:
        unicodedata.lookup(name.replace("_", " "))
    except KeyError:
        return False
    return True


def _load_file(settings: Settings, path: Path, origins: Origins) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None

    def where(section: str | None, key: str) -> str:
        line = _key_line(text, section, key)
        dotted = f"{section}.{key}" if section else key
        return f"{path}, line {line}, key '{dotted}'" if line else f"{path}, key '{dotted}'"

    for key, value in data.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{where(None, key)}: expected a [{key}] table")
            for sub_key, sub_value in value.items():
                if LEAVES.get(sub_key, (None,))[0] != key:
                    raise ConfigError(f"{where(key, sub_key)}: unknown setting")
                _apply(settings, sub_key, sub_value, where(key, sub_key), origins)
        elif key in LEAVES and LEAVES[key][0] is None:
            _apply(settings, key, value, where(None, key), origins)
        else:
            raise ConfigError(f"{where(None, key)}: unknown setting")
    for binding, spec in settings.ui.keymap.items():
        if (problem := key_problem(spec)) is not None:
            raise ConfigError(f"{where('ui.keymap', binding)}: {spec!r} is not a usable key: {problem}")


def _load_env(settings: Settings, environ: Mapping[str, str], origins: Origins) -> None:
    for name in LEAVES:
        var = f"DG_CHAT_{name.upper()}"
        if var in environ and get_origin(LEAF_TYPES[name]) is not dict:  # a table has no variable
            _apply(settings, name, environ[var], f"environment variable {var}", origins)


def _one_of(choices: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return (lambda value: value in choices), f"must be one of {', '.join(choices)}, not {{value!r}}"


RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{name: _one_of(get_args(hint)) for name, hint in LEAF_TYPES.items() if get_origin(hint) is Literal},
    "max_steps": (lambda v: 1 <= v <= 10_000, "must be from 1 to 10000"),  # 12-48 are the useful ones
    "max_canvases": (lambda v: v >= 1, "must be at least 1"),
    "entropy_bound": (lambda v: v >= 0, "must not be negative"),
    # temperatures: past ~1e38 a float32 division overflows; past 100 every token is about equally likely
    "t_max": (lambda v: 0 < v <= 100, "must be in (0, 100]"),
    "t_min": (lambda v: 0 < v <= 100, "must be in (0, 100]"),
    "stability": (lambda v: v >= 0, "must not be negative"),
    "confidence": (lambda v: v >= 0, "must not be negative"),
    "temperature": (lambda v: 0 <= v <= 100, "must be in [0, 100]"),
    "top_p": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "top_k": (lambda v: v >= 0, "must not be negative"),
    "alg_temp": (lambda v: 0 <= v <= 100, "must be in [0, 100]"),
    "eps": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "canvas_fps": (lambda v: 1 <= v <= 120, "must be between 1 and 120"),
    "device": (lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
               "must be auto, cpu, cuda or cuda:N, not {value!r}"),
    "seed": (lambda v: v is None or v in SEED_RANGE, "must be from -2**63 to 2**64 - 1"),
}
"""The range check of every setting that has one: setting name -> (test, message; {value} is the value)."""


def _value(settings: Settings, name: str) -> Any:
    section = LEAVES[name][0]
    return getattr(getattr(settings, section) if section else settings, name)


def _origin(origins: Origins, name: str) -> str:
    section = LEAVES[name][0]
    return origins.get(name, f"default of {section + '.' if section else ''}{name}")


def _validate(settings: Settings, origins: Origins) -> None:
    """Every range check; the message names where the bad value came from (file and line, variable, option)."""
    for name, (ok, message) in RANGES.items():
        value = _value(settings, name)
        if not ok(value):
            raise ConfigError(f"{_origin(origins, name)}: {message.format(value=value)}")
    s = settings.sampler
    if s.t_min > s.t_max:
        name = "t_min" if "t_min" in origins else "t_max"
        raise ConfigError(f"{_origin(origins, name)}: needs t_min <= t_max (t_min {s.t_min}, t_max {s.t_max})")
    for binding, spec in settings.ui.keymap.items():
        if (problem := key_problem(spec)) is not None:
            raise ConfigError(f"{_origin(origins, 'keymap')}, binding '{binding}': {spec!r} is not a usable key: "
                              f"{problem}")


_OPTIONS = {"max_steps": "steps", "thinking": "think", "system_prompt": "system"}
"""Command-line options not named after their setting."""


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults < config file < environment < `overrides` (CLI flags; None values are skipped)."""
    settings, origins = Settings(), Origins()
    _load_file(settings, path or paths.config_file(), origins)
    _load_env(settings, os.environ if environ is None else environ, origins)
    for name, value in (overrides or {}).items():
        if value is not None:
            _apply(settings, name, value, f"option --{_OPTIONS.get(name, name).replace('_', '-')}", origins)
    _validate(settings, origins)
    return settings


def settings_to_dict(settings: Settings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


def settings_from_dict(data: Mapping[str, Any]) -> Settings:
    """Rebuild settings saved with `settings_to_dict` (unknown keys are ignored: older versions)."""
    settings, origins = Settings(), Origins()
    for key, value in data.items():
        if key in _SECTIONS and isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                if LEAVES.get(sub_key, (None,))[0] == key:
                    _apply(settings, sub_key, sub_value, f"saved setting {key}.{sub_key}", origins)
        elif key in LEAVES and LEAVES[key][0] is None:
            _apply(settings, key, value, f"saved setting {key}", origins)
    _validate(settings, origins)
    return settings


def saved_settings(data: Mapping[str, Any]) -> Settings:
    """Settings stored with a chat, rebuilt: a value that is no longer valid (a range narrowed
    since it was saved, a damaged row) keeps its default, and the chat's other settings stay."""
    try:
        return settings_from_dict(data)
    except ConfigError:
        pass

    def valid(entry: Mapping[str, Any]) -> bool:
        try:
            settings_from_dict(entry)
        except ConfigError:
            return False
        return True

    kept: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            kept[key] = {name: item for name, item in value.items() if valid({key: {name: item}})}
        elif valid({key: value}):
            kept[key] = value
    try:
        return settings_from_dict(kept)
    except ConfigError:  # values valid one by one, not together (t_min > t_max): only damage does that
        return Settings()
