"""Models: the catalog, local lookup (never networked), downloads, quant choice, removal.

Downloads land in the standard Hugging Face cache (shared with other tools) or in the
`models_dir` setting, used as a cache directory of the same layout. huggingface_hub does the
metadata calls, the HTTP transfer and the cache layout; dg-chat adds what it lacks for 16-50 GB
files: a partial file that survives the process (`blobs/<etag>.incomplete`) so that a pull
resumes where it stopped, a free-disk check, a SHA-256 check against the Hub's LFS metadata,
and one-line errors.

Local lookup (`resolve_model`, `local_models`) only reads the disk, so once a model is
downloaded dg-chat never touches the network; HF_HUB_OFFLINE=1 makes that explicit.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import re
import shutil
import time
import tomllib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import filelock
import httpx2
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, scan_cache_dir
from huggingface_hub.errors import (
    CacheNotFound,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get, repo_folder_name
from huggingface_hub.hf_api import RepoSibling
from huggingface_hub.utils import (
    CachedFileInfo,
    CachedIncompleteFileInfo,
    DeleteCacheStrategy,
    HFCacheInfo,
    WeakFileLock,
    build_hf_headers,
)

from dg_chat import paths
from dg_chat.config import Settings
from dg_chat.errors import DgChatError
from dg_chat.files import write_atomically
from dg_chat.gguf.reader import SPLIT_NAME
from dg_chat.gguf.summary import human_bytes

GB = 1_000_000_000
DEMO = "demo"
_SPLIT = re.compile(r"-\d{5}-of-\d{5}(?=\.gguf$)", re.IGNORECASE)
_VERIFY_CHUNK = 16 * 1024 * 1024


def gb(n_bytes: float) -> str:
    """A size for people, in the unit that fits (the demo is "16.8 MB", not "0.0 GB")."""
    return human_bytes(round(n_bytes))


# -- catalog ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogModel:
    name: str
    title: str
    repo: str
    architecture: str
    files: str
    """Glob of the file of one quant, with {quant} in it."""
    quants: dict[str, int]
    """Quant -> approximate size in bytes (exact sizes come from the Hub at pull time)."""
    headroom: int
    """Bytes needed beyond the weights: KV cache, canvas, logits, scratch."""
    revision: str = "main"

    def downloadable(self) -> dict[str, int]:
        """Quants small enough for one plain HTTP download (bigger ones are published split)."""
        return {q: size for q, size in self.quants.items() if size <= constants.MAX_HTTP_DOWNLOAD_SIZE}

    def quant_of(self, filename: str) -> str | None:
        """The quant whose glob matches this file name (split suffix ignored), if any."""
        name = _SPLIT.sub("", filename.rsplit("/", 1)[-1]).lower()
        for quant in self.quants:
            if fnmatch.fnmatchcase(name, self.files.format(quant=quant).lower()):
                return quant
        return None


def catalog_file() -> Path:
    return paths.repo_models_dir() / "catalog.toml"


def demo_file() -> Path:
    return paths.repo_models_dir() / _load_catalog_toml()["demo"]["file"]


def _load_catalog_toml() -> dict:
    path = catalog_file()
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DgChatError(f"cannot read the model catalog {path}: {exc}") from None


def load_catalog() -> dict[str, CatalogModel]:
    """Catalog name -> model, in catalog order."""
    models = {}
    for entry in _load_catalog_toml().get("models", []):
        models[entry["name"]] = CatalogModel(
            name=entry["name"], title=entry["title"], repo=entry["repo"],
            architecture=entry["architecture"], files=entry["files"],
            quants={q: int(size * GB) for q, size in entry["quants"].items()},
            headroom=int(entry["headroom_gb"] * GB), revision=entry.get("revision", "main"),
        )
    return models


def parse_spec(spec: str) -> tuple[CatalogModel, str | None]:
    """"NAME[:QUANT]" -> (catalog model, quant or None); a clear error for anything else."""
    name, _, quant = spec.partition(":")
    catalog = load_catalog()
    model = catalog.get(name.lower())
    if model is None:
        raise DgChatError(f"unknown model '{spec}'; known: {', '.join([DEMO, *catalog])}, or a path to a .gguf file")
    if not quant:
        return model, None
    for known in model.quants:
        if known.lower() == quant.lower():
            return model, known
    raise DgChatError(f"{model.name} has no quant '{quant}'; choose one of {', '.join(model.quants)}")


# -- local lookup (no network) ---------------------------------------------------------------


@dataclass(frozen=True)
class LocalModel:
    spec: str
    """"demo" or "NAME:QUANT"."""
    path: Path
    size: int


def models_cache(settings: Settings) -> Path:
    """The Hugging Face cache directory that downloads go to."""
    return Path(settings.models_dir).expanduser() if settings.models_dir else Path(constants.HF_HUB_CACHE)


def _looks_like_path(spec: str) -> bool:
    return spec.lower().endswith(".gguf") or "/" in spec or os.sep in spec or spec.startswith("~")


def _is_later_split_part(filename: str) -> bool:
    """Part 2+ of a split download: listed through its first part, which loads the others."""
    named = SPLIT_NAME.match(filename.rsplit("/", 1)[-1])
    return named is not None and int(named["no"]) != 1


def _scan(settings: Settings) -> HFCacheInfo | None:
    folder = models_cache(settings)
    try:
        if folder.exists() and not folder.is_dir():
            raise DgChatError(f"the models folder {folder} is not a folder: set models_dir (DG_CHAT_MODELS_DIR) "
                              "to a folder")
        return scan_cache_dir(folder)
    except CacheNotFound:
        return None
    except OSError as exc:  # a folder on the way that this user may not enter
        raise DgChatError(f"the models folder {folder} cannot be read ({exc.strerror or exc}): set models_dir "
                          "(DG_CHAT_MODELS_DIR) to a folder of yours") from None


@dataclass(frozen=True)
class CachedQuant:
    """A catalog quant in the cache: its file, or the parts of a split one found so far."""

    model: CatalogModel
    quant: str
    files: tuple[CachedFileInfo, ...]
    """The first part first; the others in the same snapshot folder."""
    parts: int
    """How many parts the quant has (1: a single file)."""

    @property
    def spec(self) -> str:
        return f"{self.model.name}:{self.quant}"

    @property
    def complete(self) -> bool:
        """Every part is here (a stopped pull of a split quant leaves the first ones only)."""
        return len(self.files) == self.parts

    @property
    def path(self) -> Path:
        return self.files[0].file_path

    @property
    def size(self) -> int:
        return sum(file.size_on_disk for file in self.files)


def cached_quants(settings: Settings) -> list[CachedQuant]:
    """Every catalog quant in the cache, complete or not, newest first (by its first part)."""
    return _quants_in(_scan(settings))


def _quants_in(cache: HFCacheInfo | None) -> list[CachedQuant]:
    by_repo = {m.repo.lower(): m for m in load_catalog().values()}
    found = [
        CachedQuant(model, quant, (file, *_later_parts(revision.files, file)), _part_count(file.file_name))
        for repo in (cache.repos if cache else ())
        if repo.repo_type == "model" and (model := by_repo.get(repo.repo_id.lower()))
        for revision in repo.revisions
        for file in revision.files
        if (quant := model.quant_of(file.file_name)) and not _is_later_split_part(file.file_name)
    ]
    return sorted(found, key=lambda cached: cached.files[0].blob_last_modified, reverse=True)


def _part_count(filename: str) -> int:
    named = SPLIT_NAME.match(filename.rsplit("/", 1)[-1])
    return int(named["count"]) if named else 1


def _later_parts(files: Iterable[CachedFileInfo], first: CachedFileInfo) -> list[CachedFileInfo]:
    """The other parts of a split GGUF whose first part is `first`, among `files` of its snapshot."""
    named = SPLIT_NAME.match(first.file_name)
    if not named:
        return []
    return sorted((file for file in files
                   if file.file_path.parent == first.file_path.parent and _is_later_split_part(file.file_name)
                   and (other := SPLIT_NAME.match(file.file_name))
                   and (other["prefix"], other["count"]) == (named["prefix"], named["count"])),
                  key=lambda file: file.file_name)


def _downloaded(settings: Settings) -> list[CachedQuant]:
    """The complete quants of `cached_quants`."""
    return [cached for cached in cached_quants(settings) if cached.complete]


def unfinished_downloads(settings: Settings) -> dict[str, list[CachedIncompleteFileInfo]]:
    """Catalog model name -> the partial files of its stopped pulls (`blobs/<etag>.incomplete`),
    which a pull resumes. Which quant each belongs to is not on disk."""
    return _unfinished_in(_scan(settings))


def _unfinished_in(cache: HFCacheInfo | None) -> dict[str, list[CachedIncompleteFileInfo]]:
    by_folder = {repo_folder_name(repo_id=m.repo, repo_type="model").lower(): m.name for m in load_catalog().values()}
    found: dict[str, list[CachedIncompleteFileInfo]] = {}
    for file in cache.incomplete_files if cache else ():
        if name := by_folder.get(file.file_path.parent.parent.name.lower()):
            found.setdefault(name, []).append(file)
    return found


def local_models(settings: Settings) -> list[LocalModel]:
    """The demo model (when shipped) and every downloaded catalog quant, newest copy only."""
    demo = demo_file()
    found = {DEMO: LocalModel(DEMO, demo, demo.stat().st_size)} if demo.is_file() else {}
    for cached in _downloaded(settings):
        found.setdefault(cached.spec, LocalModel(cached.spec, cached.path, cached.size))
    return list(found.values())


def _choice_file() -> Path:
    return paths.data_dir() / "first_run.json"


def recorded_choice() -> str | None:
    """The model chosen on the first run (the demo or a download), if any."""
    try:
        choice = json.loads(_choice_file().read_text(encoding="utf-8")).get("choice")
    except (OSError, ValueError, AttributeError):
        return None
    return choice if isinstance(choice, str) else None


def record_choice(spec: str) -> None:
    path = _choice_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps({"choice": spec}) + "\n")


def resolve_model(spec: str, settings: Settings) -> Path:
    """The local GGUF for a model spec, without any network access.

    "": the first-run choice, else the embedded demo model; "demo": the demo; "NAME[:QUANT]": a
    downloaded catalog model (without a quant: the largest downloaded one that fits free memory);
    anything else: a GGUF path.
    """
    spec = spec.strip() or recorded_choice() or DEMO
    if spec.lower() == DEMO:  # as catalog names are: DEMO, Demo
        path = demo_file()
        if not path.is_file():
            raise DgChatError(f"the embedded demo model is missing ({path}); reinstall dg-chat, "
                              "or download a model: dg-chat models pull diffusiongemma")
        return path
    name = spec.partition(":")[0].lower()
    if name not in load_catalog() and (_looks_like_path(spec) or Path(spec).expanduser().exists()):
        path = Path(spec).expanduser()
        if path.is_dir():
            raise DgChatError(f"{path} is a folder: a model is a .gguf file (of a split model, its first part)")
        if path.exists() and not path.is_file():
            raise DgChatError(f"{path} is not a regular file (a pipe or a device): a model is a .gguf file")
        if not path.is_file():
            raise DgChatError(f"no such model file: {path}")
        return path  # a part of a split GGUF is recognised by its metadata when it is opened
    model, quant = parse_spec(spec)
    cached = [c for c in reversed(cached_quants(settings)) if c.model.name == model.name]
    local = {c.quant: c for c in cached if c.complete}
    if quant is None and local:
        sizes = {q: c.size for q, c in local.items()}
        quant, _ = choose_quant(sizes, model.headroom, free_memory(settings.device))
    if quant not in local:
        wanted = f"{model.name}:{quant}" if quant else model.name
        if partly := next((c for c in cached if c.quant == quant), None):
            raise DgChatError(f"{wanted} is only partly downloaded ({len(partly.files)} of {partly.parts} parts); "
                              f"run: dg-chat models pull {wanted}")
        raise DgChatError(f"{wanted} is not downloaded; run: dg-chat models pull {wanted}")
    return local[quant].path


# -- quant choice ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    free: int
    kind: str
    """"VRAM" or "RAM"."""


def _available_ram() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError):  # macOS has no SC_AVPHYS_PAGES: use total memory
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def free_memory(device: str = "auto") -> Memory:
    """Free memory where the model will run: VRAM of the CUDA device, else available RAM."""
    import torch  # noqa: PLC0415 - slow import, needed only here

    if device != "cpu" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(torch.device(device) if device.startswith("cuda") else None)
        return Memory(free, "VRAM")
    return Memory(_available_ram(), "RAM")


GPU_NEEDED = "DiffusionGemma needs an NVIDIA GPU with about 20 GB; the demo model runs anywhere"
"""What `doctor` and the first-run screen say on a machine without a CUDA GPU."""


def choose_quant(sizes: dict[str, int], headroom: int, memory: Memory) -> tuple[str, str]:
    """The largest quant whose size plus headroom fits free memory (else the smallest), and why."""
    fitting = [q for q, size in sizes.items() if size + headroom <= memory.free]
    if fitting:
        quant = max(fitting, key=sizes.__getitem__)
        return quant, (f"{quant}: {gb(sizes[quant])} fits {gb(memory.free)} free {memory.kind} "
                       f"with {gb(headroom)} headroom")
    quant = min(sizes, key=sizes.__getitem__)
    return quant, (f"{quant}: the smallest quant; {gb(sizes[quant])} plus {gb(headroom)} headroom is more than "
                   f"the {gb(memory.free)} free {memory.kind}, so it may be slow or fail to load")


# -- downloads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadProgress:
    filename: str
    phase: str
    """"download" or "verify"."""
    done: int
    total: int
    speed: float
    """Bytes per second over the last few seconds (0 until known)."""

    @property
    def eta(self) -> float | None:
        """Seconds left at the current speed, None while unknown."""
        return (self.total - self.done) / self.speed if self.speed > 0 else None


ProgressCallback = Callable[[DownloadProgress], None]


class DownloadCancelled(DgChatError):
    """Raised by a progress callback to stop a download; the partial file is kept for resuming."""


@dataclass(frozen=True)
class HubFile:
    filename: str
    size: int
    sha256: str


@dataclass(frozen=True)
class PullPlan:
    model: CatalogModel
    quant: str
    files: tuple[HubFile, ...]
    """The GGUF, or the parts of a split one in order (the first part loads the others)."""
    commit: str | None
    """The repository's commit the files are read at (None: the Hub named none, its default branch)."""
    reason: str | None
    """Why this quant, when it was chosen automatically."""

    @property
    def spec(self) -> str:
        return f"{self.model.name}:{self.quant}"

    @property
    def filename(self) -> str:
        return self.files[0].filename + (f" (+{len(self.files) - 1} parts)" if len(self.files) > 1 else "")

    @property
    def size(self) -> int:
        return sum(file.size for file in self.files)


class _Meter:
    """Feeds a ProgressCallback; measures speed over a sliding window of a few seconds."""

    WINDOW = 5.0

    def __init__(self, filename: str, phase: str, total: int, callback: ProgressCallback | None):
        self.filename, self.phase, self.total, self.callback = filename, phase, total, callback
        self.done = 0
        self.samples: deque[tuple[float, int]] = deque()

    def set(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.WINDOW:
            self.samples.popleft()
        (t0, d0) = self.samples[0]
        speed = (done - d0) / (now - t0) if now > t0 else 0.0
        if self.callback:
            self.callback(DownloadProgress(self.filename, self.phase, done, self.total, max(speed, 0.0)))


class _Bar:
    """The tqdm-like object huggingface_hub's http_get drives (its `tqdm_class` may be any
    callable returning an object with update() that is a context manager)."""

    def __init__(self, meter: _Meter, *, initial: int = 0, **_ignored: object):
        self.meter = meter
        meter.set(initial)

    def update(self, n: int) -> None:
        self.meter.set(self.meter.done + n)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@contextmanager
def _hub_errors(what: str) -> Iterator[None]:
    """Turn huggingface_hub, network and disk errors into one-line DgChatErrors."""
    try:
        yield
    except OfflineModeIsEnabled:
        raise DgChatError(f"cannot download {what}: offline mode is on (HF_HUB_OFFLINE); "
                          "unset it to download") from None
    except GatedRepoError:
        raise DgChatError(f"{what} is gated: accept its license on the Hub and log in with `hf auth login`") from None
    except RepositoryNotFoundError:
        raise DgChatError(f"{what}: repository not found on the Hub "
                          "(if it is private, log in with `hf auth login`)") from None
    except RevisionNotFoundError:
        raise DgChatError(f"{what}: revision not found on the Hub") from None
    except RemoteEntryNotFoundError:
        raise DgChatError(f"{what}: file not found on the Hub") from None
    except HfHubHTTPError as exc:
        code = exc.response.status_code if exc.response is not None else "error"
        hint = "log in with `hf auth login`" if code in (401, 403) else "try again later"
        raise DgChatError(f"the Hub refused {what} (HTTP {code}); {hint}") from None
    except httpx2.TransportError as exc:
        raise DgChatError(f"cannot reach {constants.ENDPOINT} for {what} ({type(exc).__name__}: {exc}); "
                          "check the network and run the pull again, it resumes") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DgChatError(f"disk full while downloading {what}; free some space and run the pull again, "
                              "it resumes") from None
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DgChatError(f"download of {what} failed: {first_line}; run the pull again, it resumes") from None


def plan_pull(spec: str, settings: Settings) -> PullPlan:
    """List the model's repository and pick the file to download (one metadata request)."""
    if spec.strip().lower() in ("", DEMO):
        raise DgChatError("the demo model ships with dg-chat; there is nothing to download")
    if _looks_like_path(spec):
        raise DgChatError(f"'{spec}' is a file path; pull takes a catalog name: {', '.join(load_catalog())}")
    model, quant = parse_spec(spec)
    with _hub_errors(model.repo):
        info = HfApi().model_info(model.repo, revision=model.revision, files_metadata=True)
    singles: dict[str, RepoSibling] = {}
    splits: dict[str, list[RepoSibling]] = {}
    for sibling in info.siblings or []:
        found = model.quant_of(sibling.rfilename)
        if found and _SPLIT.search(sibling.rfilename):
            splits.setdefault(found, []).append(sibling)
        elif found and (found not in singles or len(sibling.rfilename) < len(singles[found].rfilename)):
            singles[found] = sibling
    choices = {q: [s] for q, s in singles.items() if s.size and s.size <= constants.MAX_HTTP_DOWNLOAD_SIZE}
    choices |= {q: _complete_parts(model, q, parts) for q, parts in splits.items() if q not in choices}
    reason = None
    if quant is None:
        sizes = {q: sum(s.size or 0 for s in files) for q, files in choices.items()}
        if not sizes:
            raise DgChatError(f"{model.repo} has no downloadable GGUF of {', '.join(model.quants)}")
        quant, reason = choose_quant(sizes, model.headroom, free_memory(settings.device))
    if quant not in choices and quant not in singles:
        raise DgChatError(f"{model.repo} has no file for {quant} (looked for {model.files.format(quant=quant)})")
    files = tuple(_hub_file(model, sibling) for sibling in choices.get(quant, [singles.get(quant)]))
    return PullPlan(model, quant, files, info.sha, reason)


def _complete_parts(model: CatalogModel, quant: str, parts: list[RepoSibling]) -> list[RepoSibling]:
    """The parts of a split quant in order; a one-line error if one is missing."""
    by_number: dict[int, tuple[RepoSibling, int]] = {}
    for sibling in parts:
        named = SPLIT_NAME.match(sibling.rfilename.rsplit("/", 1)[-1])
        if named is None:  # a part number, but not in gguf-split's NAME-00001-of-00003.gguf form
            raise DgChatError(f"{model.repo}/{sibling.rfilename} is not named as a part of a split GGUF")
        by_number[int(named["no"])] = (sibling, int(named["count"]))
    count = by_number[min(by_number)][1]
    missing = [n for n in range(1, count + 1) if n not in by_number]
    if missing:
        raise DgChatError(f"{model.name}:{quant} is published split in {count} parts, but part {missing[0]} is "
                          f"missing from {model.repo}")
    return [by_number[n][0] for n in range(1, count + 1)]


def _hub_file(model: CatalogModel, sibling) -> HubFile:
    if sibling.lfs is None:
        raise DgChatError(f"{model.repo}/{sibling.rfilename} has no published SHA-256 (not an LFS file)")
    return HubFile(sibling.rfilename, sibling.lfs.size, sibling.lfs.sha256)


def _check_disk(directory: Path, needed: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise DgChatError(f"not enough disk space in {directory}: the download needs {gb(needed)} more, "
                          f"{gb(free)} is free")


def _verify(path: Path, file: HubFile, progress: ProgressCallback | None) -> None:
    """Size and SHA-256 against the Hub's metadata; a corrupt file is deleted."""
    meter = _Meter(file.filename, "verify", file.size, progress)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_VERIFY_CHUNK):
            digest.update(chunk)
            meter.set(meter.done + len(chunk))
    size = path.stat().st_size
    if size != file.size or digest.hexdigest() != file.sha256:
        path.unlink()
        found = f"size {size}" if size != file.size else f"sha256 {digest.hexdigest()[:12]}…"
        raise DgChatError(f"{file.filename} is corrupt ({found}, expected size {file.size} and "
                          f"sha256 {file.sha256[:12]}…); it was deleted, run the pull again")


def _lock_file(blob: Path) -> Path:
    """The lock a pull holds while it downloads `blob` (`<cache>/<repo folder>/blobs/<etag>`)."""
    return blob.parents[2] / ".locks" / blob.parents[1].name / f"{blob.name}.dg-chat.lock"


def _partial(blob: Path) -> Path:
    return blob.with_name(blob.name + ".incomplete")


def _still_needed(blob: Path, file: HubFile) -> int:
    """Bytes of `file` still to download (a partial file that is no prefix of it starts over)."""
    if blob.exists():
        return 0
    done = _partial(blob).stat().st_size if _partial(blob).exists() else 0
    return file.size - done if done <= file.size else file.size


def _fetch(url: str, blob: Path, file: HubFile, spec: str, progress: ProgressCallback | None) -> None:
    """Download into `<blob>.incomplete`, resuming what an earlier run left, then verify and move."""
    if file.size > constants.MAX_HTTP_DOWNLOAD_SIZE:
        raise DgChatError(f"{spec} ({gb(file.size)}) is larger than a plain HTTP download allows; "
                          "choose a smaller quant")
    part = _partial(blob)
    lock = _lock_file(blob)
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        with WeakFileLock(lock, timeout=1):
            done = part.stat().st_size if part.exists() else 0
            if done > file.size:  # not a prefix of this file: start over
                part.unlink()
                done = 0
            meter = _Meter(file.filename, "download", file.size, progress)
            with open(part, "ab") as f:
                http_get(url, f, resume_size=done, expected_size=file.size, headers=build_hf_headers(),
                         tqdm_class=lambda **kw: _Bar(meter, **kw))  # type: ignore[arg-type]
            _verify(part, file, progress)
            part.rename(blob)
    except filelock.Timeout:
        raise DgChatError(f"another process is downloading {file.filename}; wait for it to finish") from None


def download(plan: PullPlan, settings: Settings, progress: ProgressCallback | None = None) -> Path:
    """Download (or resume) the planned file, or every part of a split one, into the cache, verify
    it, return its path (a split model's first part, with the others beside it). The free disk is
    checked for every part first: a split quant must not fail after most of its gigabytes."""
    cache = models_cache(settings)
    blobs = [_blob(plan, file, cache) for file in plan.files]
    with _hub_errors(plan.spec):
        _check_disk(cache / repo_folder_name(repo_id=plan.model.repo, repo_type="model") / "blobs",
                    sum(_still_needed(blob, file) for file, (_, blob) in zip(plan.files, blobs, strict=True)))
    paths = []
    for file, (url, blob) in zip(plan.files, blobs, strict=True):
        with _hub_errors(f"{plan.model.repo}/{file.filename}"):
            if not blob.exists():
                _fetch(url, blob, file, plan.spec, progress)
            # huggingface_hub finds the blob in place and writes the snapshot link and the ref.
            paths.append(Path(hf_hub_download(plan.model.repo, file.filename, revision=plan.model.revision,
                                              cache_dir=cache)))
    return paths[0]


def _blob(plan: PullPlan, file: HubFile, cache: Path) -> tuple[str, Path]:
    """Where `file` downloads from, and its blob in the cache (named by the Hub's ETag)."""
    with _hub_errors(f"{plan.model.repo}/{file.filename}"):
        meta = get_hf_file_metadata(hf_hub_url(plan.model.repo, file.filename, revision=plan.commit))
    if meta.etag is None:
        raise DgChatError(f"{plan.model.repo}/{file.filename}: the Hub sent no ETag to file the download under")
    return meta.location, cache / repo_folder_name(repo_id=plan.model.repo, repo_type="model") / "blobs" / meta.etag


def pull(spec: str, settings: Settings, progress: ProgressCallback | None = None) -> Path:
    """Download a catalog model (NAME[:QUANT]) with progress and resume; return its path."""
    return download(plan_pull(spec, settings), settings, progress)


# -- removal ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Removal:
    specs: list[str]
    paths: list[Path]
    """The snapshot files (links) of the quants, and the partial files of stopped pulls."""
    strategy: DeleteCacheStrategy
    partials: list[CachedIncompleteFileInfo]
    """The partial files of the model's pulls: a running pull holds the lock of its own."""
    delete_partials: bool
    """Removing the whole model: its stopped pulls' partial files go too."""

    @property
    def freed(self) -> int:
        unfinished = sum(part.size_on_disk for part in self.partials) if self.delete_partials else 0
        return self.strategy.expected_freed_size + unfinished

    def execute(self) -> None:
        """Delete; raises OSError (a read-only cache), or DgChatError before deleting anything if a
        pull of the model is running (it would be left with a part of a quant deleted under it)."""
        with ExitStack() as locks:
            for part in self.partials:
                try:
                    locks.enter_context(WeakFileLock(_lock_file(part.file_path.with_suffix("")), timeout=0.2))
                except filelock.Timeout:
                    raise DgChatError(f"a pull is downloading into {part.file_path}; stop it first") from None
            self.strategy.execute()
            for part in self.partials if self.delete_partials else ():
                part.file_path.unlink(missing_ok=True)


def plan_removal(spec: str, settings: Settings) -> Removal:
    """What `models rm NAME[:QUANT]` deletes: every cached copy (a split one's parts, also those of a
    stopped pull), through the cache deletion API; for a whole model also its stopped pulls' partial files."""
    if spec.strip().lower() in ("", DEMO):
        raise DgChatError("the demo model ships with dg-chat and cannot be removed")
    if _looks_like_path(spec):
        raise DgChatError(f"'{spec}' is a file path; models rm deletes downloaded catalog models "
                          f"({', '.join(load_catalog())}): delete a file of your own yourself")
    model, quant = parse_spec(spec)
    cache = _scan(settings)  # once: a shared Hugging Face cache may hold many repositories
    chosen = [c for c in _quants_in(cache) if c.model.name == model.name and quant in (None, c.quant)]
    partials = _unfinished_in(cache).get(model.name, [])
    whole = quant is None
    if cache is None or not (chosen or (whole and partials)):
        hint = f" (dg-chat models rm {model.name} deletes the partial files of its stopped pulls)" if partials else ""
        raise DgChatError(f"{spec} is not downloaded; nothing to remove{hint}")
    files = [file for cached in chosen for file in cached.files]
    deleted = [*(file.file_path for file in files), *(part.file_path for part in partials if whole)]
    return Removal(sorted({c.spec for c in chosen}), sorted(deleted), cache.delete_files(*files), partials, whole)
