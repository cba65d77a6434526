"""`dg-chat doctor`: one line per check (ok / warn / fail, with a hint); exit 1 if one failed."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from huggingface_hub import constants
from rich.text import Text

from dg_chat import hub, paths
from dg_chat.commands.output import StdoutConsole
from dg_chat.config import Settings
from dg_chat.engine.backends.choice import choose_backend, llama_status
from dg_chat.engine.remote.client import RemoteClient, RemoteError
from dg_chat.engine.remote.spec import EXAMPLE as REMOTE_EXAMPLE, api_key, is_remote, parse_remote
from dg_chat.errors import DgChatError
from dg_chat.gguf.reader import open_gguf
from dg_chat.store import StoreError, history_problems, repair_history
from dg_chat.text.sanitize import visible

LLAMA_CPP_VERSION = "0.3.36"
ENOUGH_DISK = 20 * hub.GB  # DiffusionGemma Q4_K_M plus some room
_STYLES = {"ok": "green", "warn": "yellow", "fail": "bold red"}


@dataclass(frozen=True)
class Check:
    status: str
    """"ok", "warn" or "fail"."""
    name: str
    detail: str
    hint: str = ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def check_python() -> Check:
    ok = sys.version_info >= (3, 11)
    return Check("ok" if ok else "fail", "python", f"{platform.python_version()} ({sys.executable})",
                 "" if ok else "dg-chat needs Python 3.11 or newer")


def check_torch() -> list[Check]:
    try:
        import torch  # noqa: PLC0415 - here, so that a broken torch is a failed check
    except Exception as exc:  # noqa: BLE001 - a broken install must be reported, not raised
        return [Check("fail", "torch", f"not importable ({_first_line(exc)})", "run scripts/setup.sh")]
    checks = [Check("ok", "torch", f"{torch.__version__} (CUDA build: {torch.version.cuda or 'no'})")]
    if not torch.cuda.is_available():
        why = "this torch has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        return checks + [Check("warn", "gpu", f"{why}; models run on the CPU",
                               hub.GPU_NEEDED)]
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        checks.append(Check("ok", f"gpu {index}", f"{torch.cuda.get_device_name(index)}, "
                                                  f"{hub.gb(free)} free of {hub.gb(total)} VRAM"))
    return checks


def check_llama(cuda: bool) -> Check:
    status = llama_status()
    if not status["usable"]:
        return Check("fail", "llama.cpp", f"llama-cpp-python is not usable ({status['error']})",
                     "run scripts/setup.sh to build it; Dream, LLaDA, LLaDA-MoE and RND1 run on it")
    version, offload = status["llama_cpp_python"], status["gpu_offload"]
    runs = ", ".join(status["architectures"]["llama"]) or "no diffusion architecture"
    detail = (f"llama-cpp-python {version}, " + ("GPU offload" if offload else "CPU only (built without GPU offload)")
              + f"; runs {runs}")
    if version != LLAMA_CPP_VERSION:
        return Check("warn", "llama.cpp", detail, f"dg-chat is tested with {LLAMA_CPP_VERSION}; run scripts/setup.sh")
    if cuda and not offload:
        return Check("warn", "llama.cpp", detail, "rebuild it for CUDA: DG_CHAT_CUDA=1 scripts/setup.sh")
    return Check("ok", "llama.cpp", detail)


def check_kernels(settings: Settings) -> Check:
    """The `kernels` setting, what it resolves to on the configured device, and whether Triton can run there."""
    try:
        # Here, so that a broken PyTorch engine is a failed check, not a crash of doctor.
        from dg_chat.engine.backends.base import BackendError  # noqa: PLC0415
        from dg_chat.engine.backends.torch_dg.backend import resolve_device  # noqa: PLC0415
        from dg_chat.engine.backends.torch_dg.kernel_choice import choose_kernels  # noqa: PLC0415
        from dg_chat.engine.backends.torch_dg.kernels.runtime import unavailable_reason  # noqa: PLC0415
    except Exception as exc:  # noqa: BLE001 - a broken install must be reported, not raised
        return Check("fail", "kernels", f"the PyTorch engine is not importable ({_first_line(exc)})",
                     "run scripts/setup.sh")
    try:
        device = resolve_device(settings.device)
    except BackendError as exc:  # every answer on the PyTorch engine would fail the same way
        return Check("fail", "device", str(exc))
    reason = unavailable_reason(device)
    triton = "Triton usable" if reason is None else f"Triton not usable: {reason}"
    try:
        chosen = choose_kernels(settings.kernels, device)
    except BackendError:
        return Check("fail", "kernels", f"{settings.kernels} on {device}; {triton}",
                     "set kernels = \"auto\" or \"reference\" (or --kernels reference)")
    resolved = chosen if settings.kernels == chosen else f"{settings.kernels} → {chosen}"
    detail = f"{resolved} on {device}; {triton}"
    if settings.kernels == "auto" and device.type == "cuda" and chosen == "reference":
        return Check("warn", "kernels", detail, "the reference path is slower and needs more GPU memory")
    return Check("ok", "kernels", detail)


def _model_check(name: str, path: Path, settings: Settings, hint: str) -> Check:
    """`hint` is for a file that cannot be read; a backend that cannot run it says what to use."""
    try:
        with open_gguf(path) as gguf:
            architecture = gguf.architecture
    except DgChatError as exc:
        return Check("fail", name, str(exc), hint)
    try:
        backend = choose_backend(architecture, settings.backend)
    except DgChatError as exc:
        return Check("fail", name, str(exc))
    return Check("ok", name, f"{hub.gb(path.stat().st_size)}, {architecture} on the {backend} backend ({path})")


def check_remote(settings: Settings) -> list[Check]:
    """A model on a server (openai:...): the server answers, takes the API key and lists the model."""
    try:
        spec = parse_remote(settings.model)
    except DgChatError as exc:
        return [Check("fail", "model", str(exc), f"e.g. -m {REMOTE_EXAMPLE}")]
    try:
        key = api_key(settings.api_key_env)
    except DgChatError as exc:
        return [Check("fail", "api key", str(exc))]
    client = RemoteClient(spec, key, settings.api_key_env)
    try:
        served = client.models()
    except RemoteError as exc:
        if exc.status in (401, 403):
            return [Check("ok", "endpoint", f"{client.label} answers"), Check("fail", "api key", str(exc))]
        return [Check("fail", "endpoint", str(exc))]
    finally:
        client.close()
    checks = [Check("ok", "endpoint", f"{client.label} answers, serving {len(served)} model(s)"),
              Check("ok", "api key", f"accepted, from {settings.api_key_env}" if key else
                    f"none needed ({settings.api_key_env} is not set)")]
    wanted = spec.model or (served[0] if served else "")
    if wanted not in served:
        return checks + [Check("fail", "model", f"{wanted or 'a model'} is not served; the server lists: "
                                                f"{', '.join(served) or 'nothing'}",
                               "fix the part after # of the spec")]
    return checks + [Check("ok", "model", f"{wanted} is served")]


def check_models(settings: Settings) -> list[Check]:
    listing: DgChatError | None = None
    try:
        local = hub.local_models(settings)
    except DgChatError as exc:  # a models folder that is a file, say: the other checks still run
        local, listing = [], exc
    redownload = "remove it with `dg-chat models rm` and pull it again"
    checks = [_model_check(m.spec, m.path, settings, redownload) for m in local]
    if listing is not None:
        checks.append(Check("fail", "downloads", str(listing)))
    if is_remote(settings.model):
        return checks + check_remote(settings)
    if listing is None and all(m.spec == hub.DEMO for m in local):
        checks.append(Check("warn", "downloads", f"no model downloaded to {hub.models_cache(settings)}",
                            "dg-chat models pull diffusiongemma"))
    try:
        chosen = hub.resolve_model(settings.model, settings)
    except DgChatError as exc:
        return checks + [Check("fail", "model", str(exc))]
    check = _model_check("model", chosen, settings, "set `model` in the config file or pass -m")
    return checks + [replace(check, detail=f"{settings.model or hub.DEMO}: {check.detail}")]


def check_config(error: DgChatError | None) -> Check:
    """The config file, or why the settings (file, DG_CHAT_* variables, flags) did not load."""
    if error is not None:
        return Check("fail", "config", str(error), "fix it to also run the kernels, model, models dir and disk checks")
    config = paths.config_file()
    if config.exists():
        return Check("ok", "config", str(config))
    if os.environ.get("DG_CHAT_CONFIG"):  # named on purpose: a missing file there is likely a typo
        return Check("warn", "config", f"{config} does not exist (named by DG_CHAT_CONFIG); defaults apply",
                     "check the path, or unset DG_CHAT_CONFIG")
    return Check("ok", "config", f"{config} (not created; defaults apply)")


def check_dir(name: str, path: Path, hint: str, bad: str = "fail") -> Check:
    """A folder dg-chat writes to: ok if it is a writable folder or could be created as one (it creates nothing)."""
    # lexists: a dangling link is in the way of mkdir too
    existing = next(p for p in (path, *path.parents) if os.path.lexists(p))
    where = "" if existing == path else f"cannot be created: {existing} "
    if not os.path.isdir(existing):
        problem = "is not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = "is not writable"
    else:
        return Check("ok", name, str(path) + ("" if existing == path else " (not created yet)"))
    return Check(bad, name, f"{path} {where}{problem}", hint)


def check_paths(settings: Settings | None) -> list[Check]:
    """The app's folders, and where the models go when the settings loaded."""
    hub_mode = ("offline (HF_HUB_OFFLINE)" if constants.HF_HUB_OFFLINE
                else f"{constants.ENDPOINT}, used by `models pull` only")
    checks = [
        check_dir("data", paths.data_dir(), "set DG_CHAT_DATA_DIR to a writable folder"),
        check_dir("cache", paths.cache_dir(), "set DG_CHAT_CACHE_DIR to a writable folder"),
        Check("ok", "hub", hub_mode),
    ]
    if settings is None:
        return checks
    models = hub.models_cache(settings)
    existing = next(p for p in (models, *models.parents) if os.path.exists(p))  # False where it may not look
    free = shutil.disk_usage(existing).free
    # only `models pull` writes there: a read-only shared cache still serves its downloads
    return checks + [
        check_dir("models dir", models, "for downloads, set models_dir (or DG_CHAT_MODELS_DIR) to a writable folder",
                  bad="warn"),
        Check("ok" if free >= ENOUGH_DISK else "warn", "disk", f"{hub.gb(free)} free at {existing}",
              "" if free >= ENOUGH_DISK else "DiffusionGemma Q4_K_M needs about 17 GB"),
    ]


def _exists(path: Path) -> bool:
    """Path.exists, with a folder on the way that cannot be entered said in one line (Python 3.11
    raises PermissionError there)."""
    try:
        return path.exists()
    except OSError as exc:
        raise DgChatError(f"{path} cannot be read ({exc.strerror or exc}): make its folder readable, or set "
                          "DG_CHAT_DATA_DIR to a folder of yours") from None


def check_history() -> Check:
    """SQLite's integrity check of the chat history."""
    path = paths.history_db()
    try:
        exists = _exists(path)
    except DgChatError as exc:
        return Check("fail", "history", str(exc))
    if not exists:
        folder = check_dir("history", path.parent, "set DG_CHAT_DATA_DIR to a writable folder")
        if folder.status != "ok":
            return replace(folder, detail=f"{path} cannot be created: {folder.detail}")
        return Check("ok", "history", f"{path} (not created yet)")
    if not os.access(path, os.R_OK | os.W_OK):
        return Check("fail", "history", f"{path} is read-only: no chat could be saved", "make the file writable")
    try:
        problems = history_problems(path)
    except StoreError as exc:  # locked or unreadable: no damage, and nothing to repair
        return Check("fail", "history", str(exc))
    if problems:
        return Check("fail", "history", f"{path} is damaged ({problems[0]})",
                     "dg-chat doctor --repair-history keeps what SQLite can still read")
    return Check("ok", "history", f"{path}, integrity check ok")


def run_checks(settings: Settings | None, config_error: DgChatError | None = None) -> list[Check]:
    """Every check; when the settings did not load (config_error), only those that need none."""
    torch_checks = check_torch()
    cuda = any(c.name.startswith("gpu ") for c in torch_checks)
    if settings is None:
        return [check_python(), *torch_checks, check_llama(cuda), check_config(config_error), *check_paths(None),
                check_history()]
    return [check_python(), *torch_checks, check_kernels(settings), check_llama(cuda), *check_models(settings),
            check_config(config_error), *check_paths(settings), check_history()]


def repair(console: StdoutConsole) -> int:
    """`doctor --repair-history`: a fresh history with every row SQLite can still read."""
    path = paths.history_db()
    if _exists(path) and not history_problems(path):
        console.print(Text(f"the history {path} passes SQLite's integrity check; nothing to repair"), soft_wrap=True)
        return 0
    result = repair_history(path)
    kept = ", ".join(f"{count} {table}" for table, count in result.kept.items())
    console.print(Text(f"kept {kept} in {path}"), soft_wrap=True)
    if result.damaged_tables:
        console.print(Text(f"some rows of {', '.join(result.damaged_tables)} could not be read and are lost"),
                      soft_wrap=True)
    console.print(Text(f"the damaged file is kept as {result.backup}"), soft_wrap=True)
    return 0


def run(args: argparse.Namespace) -> int:
    console = StdoutConsole(highlight=False)
    if args.repair_history:
        return repair(console)
    # cli.main hands over a settings error instead of stopping, so that doctor can report it
    checks = run_checks(args.settings, getattr(args, "settings_error", None))
    for check in checks:
        # details quote model files and servers: their controls are shown, never sent
        line = Text.assemble((f"{check.status:<5}", _STYLES[check.status]), f"{check.name:<15} ", visible(check.detail))
        if check.hint:
            line.append(f"  hint: {visible(check.hint)}", style="dim")
        console.print(line, soft_wrap=True)
    return 1 if any(check.status == "fail" for check in checks) else 0
