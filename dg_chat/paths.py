"""The single owner of on-disk locations.

Every directory can be redirected with an environment variable (tests use them to stay
isolated): DG_CHAT_CONFIG_DIR, DG_CHAT_DATA_DIR, DG_CHAT_CACHE_DIR, or DG_CHAT_CONFIG for
the config file itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "dg-chat"


def _dir(env: str, default: str) -> Path:
    return Path(os.environ.get(env) or default)


def config_dir() -> Path:
    return _dir("DG_CHAT_CONFIG_DIR", platformdirs.user_config_dir(APP, appauthor=False))


def data_dir() -> Path:
    return _dir("DG_CHAT_DATA_DIR", platformdirs.user_data_dir(APP, appauthor=False))


def cache_dir() -> Path:
    return _dir("DG_CHAT_CACHE_DIR", platformdirs.user_cache_dir(APP, appauthor=False))


def config_file() -> Path:
    return Path(os.environ.get("DG_CHAT_CONFIG") or config_dir() / "config.toml")


def history_db() -> Path:
    return data_dir() / "history.sqlite3"


def repo_models_dir() -> Path:
    """`models/` of the source checkout: the catalog and the embedded demo model."""
    return Path(__file__).resolve().parent.parent / "models"
