"""Installation settings: one typed object, read from the environment once per process.

Every module that needs a path or a switch calls :func:`get_settings` instead of reading
``os.environ`` itself, so the rules (what wins, what the defaults are) live here only. The parsed
object is cached per set of raw values, so a test or a process that changes a variable gets the new
settings on its next call, and nothing is read at import time.

| variable | field | default |
|---|---|---|
| ``INTENTLENS_DB`` | ``db_path`` | ``data/intentlens`` (a folder) |
| ``INTENTLENS_MODELS`` | ``models_root`` | ``<project>/models/saved`` |
| ``INTENTLENS_MODEL_DIRS`` | ``model_dirs`` (more folders models may load from, ``os.pathsep``-separated) | none |
| ``INTENTLENS_DEMO`` | ``demo`` (``None`` when unset: the app then reads ``.streamlit/secrets.toml``) | unset |
| ``INTENTLENS_MEMORY_LIMIT`` | ``memory_limit`` (DuckDB's limit, e.g. ``3GB``) | ``3GB`` |
| ``INTENTLENS_API_KEY`` | ``api_key`` (the scoring service's key, sent as ``X-API-Key``) | none (open) |
"""
from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

ENV_DB = "INTENTLENS_DB"
ENV_MODELS = "INTENTLENS_MODELS"
ENV_MODEL_DIRS = "INTENTLENS_MODEL_DIRS"
ENV_DEMO = "INTENTLENS_DEMO"
ENV_MEMORY = "INTENTLENS_MEMORY_LIMIT"
ENV_API_KEY = "INTENTLENS_API_KEY"

DEFAULT_DB = Path("data") / "intentlens"   # a store folder, relative: beside wherever the app is started
DEFAULT_MODELS_ROOT = PROJECT_ROOT / "models" / "saved"
DEFAULT_MEMORY_LIMIT = "3GB"
SAMPLE_DIR = PROJECT_ROOT / "sample_data"


def parse_flag(value: str) -> bool:
    """``1/true/yes/on`` (any case) is on; anything else is off."""
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    db_path: Path                   # the store folder every process of the installation shares
    models_root: Path               # where models are saved, listed and loaded
    model_dirs: tuple[Path, ...]    # further folders a browser user may load a model from
    demo: bool | None               # read-only demo mode; None = not set in the environment
    memory_limit: str               # DuckDB memory limit; it spills to <db>.tmp/ beyond it
    api_key: str | None = None      # the scoring service's API key; None = no key needed

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def value(name: str) -> str | None:
            raw = env.get(name)
            return raw.strip() if raw is not None and raw.strip() else None

        db = value(ENV_DB)
        models = value(ENV_MODELS)
        extra = value(ENV_MODEL_DIRS)
        demo = value(ENV_DEMO)
        return cls(
            db_path=Path(db) if db else DEFAULT_DB,
            models_root=Path(models) if models else DEFAULT_MODELS_ROOT,
            model_dirs=tuple(Path(p) for p in extra.split(os.pathsep) if p) if extra else (),
            demo=parse_flag(demo) if demo is not None else None,
            memory_limit=value(ENV_MEMORY) or DEFAULT_MEMORY_LIMIT,
            api_key=value(ENV_API_KEY),
        )

    def allowed_model_dirs(self) -> tuple[Path, ...]:
        """The folders below which a model may be read on a user's say-so (resolved)."""
        return tuple(p.resolve() for p in (self.models_root, *self.model_dirs))


ENV_NAMES: tuple[str, ...] = (ENV_DB, ENV_MODELS, ENV_MODEL_DIRS, ENV_DEMO, ENV_MEMORY, ENV_API_KEY)


@functools.lru_cache(maxsize=8)
def _parsed(raw: tuple[str | None, ...]) -> Settings:
    return Settings.from_env({k: v for k, v in zip(ENV_NAMES, raw, strict=True) if v is not None})


def get_settings() -> Settings:
    """The process's settings (parsed once per distinct environment)."""
    return _parsed(tuple(os.environ.get(name) for name in ENV_NAMES))
