"""The saved-model registry: where models live and what they are called, the listing, a shared cache
of loaded models, and adding (a .zip upload, a server directory) or deleting a model.

Every caller — ``core.modeling.pipeline``, the CLI, ``core.insight``, the pages — asks here, so each
fact has one home:

* the models root is ``core.settings.get_settings().models_root`` (``root=`` overrides it per call);
* a model's default folder is :func:`default_model_dir`, built with the one :func:`safe_name` rule;
* :func:`card_stamp` changes whenever a model is saved, replaced or copied (a cache key for pages);
* :func:`list_models` is the one listing (sidebar, Home, Performance, leaderboard);
* :func:`load_model_cached` keeps a few loaded models, so a model sits in memory once per process.

Adding a model is safe against hostile input: a .zip is checked member by member before a byte is
written (count, sizes counted while reading, no absolute paths, ``..``, links or unknown file names),
a directory is read only below the allowed folders (``Settings.allowed_model_dirs()``: the models
root and ``INTENTLENS_MODEL_DIRS``), and every candidate is loaded with ``models.artifact.load_model``
(bounded, code-free) before it is copied in under a temporary name and renamed into place. Demo mode
(read-only) is the caller's check: the pages refuse before they call here.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import stat
import tempfile
import threading
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

import pandas as pd

from core.errors import ConflictError, ModelError
from core.settings import ENV_MODEL_DIRS, get_settings
from models.artifact import CARD_FILE, MODEL_FILES, LoadedModel, load_card, load_model

if TYPE_CHECKING:
    from core.modeling.labels import LabelSpec

MODEL_CACHE_SIZE = 4                  # loaded models kept per process (least recently used dropped)
MAX_ZIP_BYTES = 512 * 2**20           # an upload: archive size, and what it may unpack to
MAX_ZIP_MEMBERS = 32                  # files in an upload (a model has at most len(MODEL_FILES))
MAX_NAME_CHARS = 100                  # a folder name from safe_name
METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece")
_NUMERIC = ("train_seconds", "size_mb", *(f"{m}{end}" for m in METRICS for end in ("", "_low", "_high")),
            "valid_roc_auc", "valid_pr_auc")
_TEXT = ("model_id", "path", "kind", "dataset", "horizon", "scope", "created_at", "window")
LIST_COLUMNS = (*_TEXT, *_NUMERIC, "error")     # list_models' columns, in this order


# -- names ------------------------------------------------------------------------------------------
def _root(root: str | Path | None) -> Path:
    return Path(root) if root is not None else get_settings().models_root


def safe_name(text: str, fallback: str = "model") -> str:
    """A folder name of letters, digits and ``_ . -``: other runs become ``_``, leading and trailing
    ``. _ -`` go (never hidden, never ``..``), at most MAX_NAME_CHARS; ``fallback`` when nothing is left."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("._-")[:MAX_NAME_CHARS].rstrip("._-")
    return name or fallback


def default_model_dir(dataset: str, kind: str, spec: LabelSpec, root: str | Path | None = None) -> Path:
    """``<models root>/<dataset>-<kind>-<horizon>[-category]``, each part made path-safe; the CLI, the
    Train page and ``train_model`` save a dataset's model here unless told otherwise."""
    suffix = "" if spec.scope == "any" else "-category"
    name = f"{safe_name(dataset, 'dataset')}-{safe_name(kind)}-{safe_name(spec.horizon, 'horizon')}{suffix}"
    return _root(root) / name


# -- stamps -----------------------------------------------------------------------------------------
def card_stamp(model_dir: str | Path) -> int:
    """A number that changes whenever the model in ``model_dir`` is saved, replaced or copied in
    (its card.json's modification time, size and inode); 0 when there is no card."""
    try:
        info = (Path(model_dir) / CARD_FILE).stat()
    except (FileNotFoundError, NotADirectoryError):
        return 0
    return hash((info.st_mtime_ns, info.st_size, info.st_ino))


def listing_stamp(root: str | Path | None = None) -> tuple[tuple[str, int], ...]:
    """(model directory, :func:`card_stamp`) of every model folder under ``root``: changes when a
    model is added, replaced or deleted (a cache key for :func:`list_models`)."""
    return tuple((str(path), card_stamp(path)) for path in _model_dirs(_root(root)))


def _model_dirs(root: Path) -> list[Path]:
    """Folders under ``root`` holding a card.json; hidden ones (temporary copies) are skipped."""
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob(f"*/{CARD_FILE}") if not p.parent.name.startswith("."))


# -- listing ----------------------------------------------------------------------------------------
def _row(model_dir: Path) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(LIST_COLUMNS)
    row.update(model_id=model_dir.name, path=str(model_dir))
    try:
        card = load_card(model_dir)
    except ModelError as err:
        row["error"] = err.message
        return row
    label: dict[str, Any] = card["label"] if isinstance(card.get("label"), dict) else {}
    metrics: dict[str, Any] = card["metrics"] if isinstance(card.get("metrics"), dict) else {}
    row.update(model_id=str(card.get("model_id") or model_dir.name), kind=card.get("kind"),
               dataset=card.get("dataset"), horizon=label.get("horizon"), scope=label.get("scope"),
               created_at=card.get("created_at"), train_seconds=card.get("train_seconds"),
               size_mb=sum(f.stat().st_size for f in model_dir.iterdir() if f.is_file()) / 1e6)
    for name in METRICS:
        value = metrics.get(name)
        if isinstance(value, dict):
            row[name], row[f"{name}_low"], row[f"{name}_high"] = (
                value.get("value"), value.get("low"), value.get("high"))
        elif isinstance(value, (int, float)):
            row[name] = value
    row["window"] = "test" if card.get("metrics_split") == "test" else "validation"
    valid: dict[str, Any] = card["valid_metrics"] if isinstance(card.get("valid_metrics"), dict) else {}
    for name in ("roc_auc", "pr_auc"):
        value = valid.get(name)
        row[f"valid_{name}"] = value.get("value") if isinstance(value, dict) else None
    return row


def list_models(root: str | Path | None = None, dataset: str | None = None, *,
                include_invalid: bool = False) -> pd.DataFrame:
    """One row per model folder under ``root`` (default: the models root), newest first.

    Columns (always present, also when empty): ``model_id``, ``path``, ``kind``, ``dataset``,
    ``horizon``, ``scope``, ``created_at`` (ISO text), ``train_seconds``, ``size_mb``, for each of
    ``roc_auc``, ``pr_auc``, ``log_loss``, ``brier``, ``ece`` the reported value with ``_low`` /
    ``_high`` (its bootstrap 95 % interval), ``window`` (where they were measured: ``test``, or
    ``validation`` for models older than the test window), ``valid_roc_auc`` and ``valid_pr_auc``
    (the validation window's, beside), all floats with NaN where unknown, and ``error``: None, or why
    the card cannot be used (another format or schema, not JSON, ...). Such rows are left out
    unless ``include_invalid``. ``dataset``: only models trained on it.
    """
    rows = [_row(path) for path in _model_dirs(_root(root))]
    rows = [r for r in rows if (include_invalid or r["error"] is None)
            and (dataset is None or r["dataset"] == dataset)]
    frame = pd.DataFrame(rows, columns=list(LIST_COLUMNS))
    numeric, text = list(_NUMERIC), [*_TEXT, "error"]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce").astype(float)
    frame[text] = frame[text].astype(object).where(frame[text].notna(), None)
    invalid = frame["error"].notna()
    order = frame.assign(_invalid=invalid, _created=frame["created_at"].fillna("")).sort_values(
        ["_invalid", "_created", "path"], ascending=[True, False, False], kind="stable").index
    return frame.loc[order].reset_index(drop=True)


# -- loaded models (shared) -------------------------------------------------------------------------
class _ModelCache:
    """Loaded models keyed by (resolved path, card stamp), at most ``size``, least recently used
    dropped first. Thread-safe; two threads asking for one model load it once. A newer card of a
    path replaces the old entry, so one model never sits in memory twice."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._models: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._loading: dict[tuple[str, int], threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, model_dir: str | Path) -> LoadedModel:
        path = Path(model_dir).resolve()
        key = (str(path), card_stamp(path))
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._models:           # another thread loaded it meanwhile
                    self._models.move_to_end(key)
                    return self._models[key]
            try:
                model = load_model(path)
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                for old in [k for k in self._models if k[0] == key[0]]:
                    del self._models[old]
                self._models[key] = model
                while len(self._models) > self.size:
                    self._models.popitem(last=False)
        return model

    def evict(self, path: str) -> None:
        with self._lock:
            for key in [k for k in self._models if k[0] == path]:
                del self._models[key]

    def clear(self) -> None:
        with self._lock:
            self._models.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)


_CACHE = _ModelCache(MODEL_CACHE_SIZE)


def load_model_cached(model_dir: str | Path) -> LoadedModel:
    """``models.artifact.load_model`` through the process's small LRU (keyed by resolved path and
    :func:`card_stamp`, so a retrained model is reloaded). The model is shared: read it, never change
    it. ModelError as ``load_model`` raises it (nothing is cached then)."""
    return _CACHE.get(model_dir)


def clear_model_cache() -> None:
    """Forget every cached model (tests; memory pressure)."""
    _CACHE.clear()


# -- adding a model ---------------------------------------------------------------------------------
def _refuse(why: str) -> ModelError:
    return ModelError(f"the upload is not an IntentLens model: {why}.", title="Not an IntentLens model",
                      hint="Upload a .zip of one model directory (card.json and its weights), as "
                           "written by `python -m core train`.")


def _is_junk(path: PurePosixPath) -> bool:
    """Entries some archivers add (macOS resource forks and Finder files): skipped, never extracted."""
    return path.parts[0] == "__MACOSX" or path.name == ".DS_Store" or path.name.startswith("._")


def _checked_members(archive: zipfile.ZipFile) -> tuple[list[zipfile.ZipInfo], str | None]:
    """The members to extract, and the enclosing folder (or None), after checking every entry."""
    members = [m for m in archive.infolist() if not m.is_dir() and not _is_junk(PurePosixPath(m.filename))]
    if not members:
        raise _refuse("the archive is empty")
    if len(members) > MAX_ZIP_MEMBERS:
        raise _refuse(f"the archive holds {len(members):,} files; a model has at most {len(MODEL_FILES)}")
    folders: set[str] = set()
    for member in members:
        name = member.filename
        path = PurePosixPath(name)
        if name.startswith(("/", "\\")) or "\\" in name or re.match(r"^[A-Za-z]:", name) \
                or ".." in path.parts:
            raise _refuse(f"the archive member {name!r} points outside the model folder")
        if stat.S_ISLNK(member.external_attr >> 16):
            raise _refuse(f"the archive member {name!r} is a link")
        if member.flag_bits & 0x1:
            raise _refuse(f"the archive member {name!r} is encrypted")
        if len(path.parts) > 2:
            raise _refuse(f"the archive member {name!r} is nested too deep")
        if path.name not in MODEL_FILES:
            raise _refuse(f"unexpected file {name!r} (a model holds only {', '.join(sorted(MODEL_FILES))})")
        folders.add(path.parts[0] if len(path.parts) == 2 else "")
    if len(folders) > 1:
        raise _refuse("the archive holds several folders; zip one model directory")
    if len({PurePosixPath(m.filename).name for m in members}) != len(members):
        raise _refuse("the archive holds the same file twice")
    if sum(m.file_size for m in members) > MAX_ZIP_BYTES:
        raise _refuse(f"it unpacks to more than {MAX_ZIP_BYTES // 2**20:,} MB")
    return members, folders.pop() or None


def extract_model_zip(data: bytes | IO[bytes], dest: str | Path) -> str | None:
    """Unpack a model archive flat into the existing folder ``dest`` after checking every member
    (:func:`_checked_members`); the size cap is also counted on the bytes actually read, so a
    member that lies about its size stops at the cap. Returns the enclosing folder's name or None."""
    dest = Path(dest)
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        source.seek(0, os.SEEK_END)
        size = source.tell()
        source.seek(0)
    except (OSError, ValueError) as err:
        raise _refuse("the archive cannot be read") from err
    if size > MAX_ZIP_BYTES:
        raise _refuse(f"the archive is larger than {MAX_ZIP_BYTES // 2**20:,} MB")
    try:
        with zipfile.ZipFile(source) as archive:
            members, folder = _checked_members(archive)
            written = 0
            for member in members:
                target = dest / PurePosixPath(member.filename).name
                with archive.open(member) as src, target.open("wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > MAX_ZIP_BYTES:
                            raise _refuse(f"it unpacks to more than {MAX_ZIP_BYTES // 2**20:,} MB")
                        out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:
        raise _refuse(f"it is not a readable .zip archive ({err})") from err
    return folder


def _plain_files(src: Path) -> list[Path]:
    """The model files in ``src``; ModelError for one that is a link or not a regular file."""
    files = []
    for path in sorted(src.iterdir()):
        if path.name not in MODEL_FILES:
            continue
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            raise ModelError(f"{path.name} in {src} is a link or not a regular file; a model's files "
                             f"must be plain files.", hint="Copy the real files into the model directory.")
        files.append(path)
    return files


def _install(src: Path, name: str, root: Path) -> Path:
    """Check ``src`` with ``load_model``, then copy its model files into ``root/<safe name>``: into
    a hidden temporary folder first (card.json last), then one rename, so no listing ever sees half
    a model. ConflictError when the name is taken."""
    files = _plain_files(src)
    load_model(src)                          # ModelError with the reason and what to do
    target = root / safe_name(name)
    if target.exists():
        if target.resolve() == src.resolve():
            raise ConflictError(f"{src} is already in {root}.", title="Already listed",
                                hint="Pick it in the sidebar's Model box.")
        raise ConflictError(f"a model named {target.name!r} already exists in {root}.", title="Name taken",
                            hint="Delete the old one first, or rename the folder.")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".import", dir=root))
    try:
        for path in sorted(files, key=lambda p: p.name == CARD_FILE):
            shutil.copyfile(path, tmp / path.name)
        try:
            os.rename(tmp, target)
        except OSError as err:               # created meanwhile by another process
            raise ConflictError(f"a model named {target.name!r} already exists in {root}.",
                                title="Name taken", hint="Delete the old one first.") from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def install_zip(data: bytes | IO[bytes], name: str | None = None, root: str | Path | None = None) -> Path:
    """Add the model in a .zip (the bytes, or a seekable binary file) to ``root`` (default: the models
    root) and return its new folder. The archive's single enclosing folder names the model; an
    archive with its files at the top is named ``name`` (e.g. the uploaded file's name; a trailing
    ``.zip`` is dropped), else "model". Names are made path-safe (:func:`safe_name`).
    ModelError: not a model archive, or not a usable model; ConflictError: the name is taken.
    Nothing is written under ``root`` unless the model loads."""
    stem = re.sub(r"\.zip$", "", name or "", flags=re.IGNORECASE)
    staging = Path(tempfile.mkdtemp(prefix="intentlens-model-upload-"))
    try:
        folder = extract_model_zip(data, staging)
        return _install(staging, folder or stem or "model", _root(root))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _below(path: Path, folders: tuple[Path, ...]) -> bool:
    return any(path.is_relative_to(folder) for folder in folders)


def _allowed_source(path: str | Path, root: str | Path | None) -> Path:
    """``path`` resolved, when it lies below an allowed folder both as written and with every link
    followed; one refusal for everything else (outside, ``..``, a link out of or into the folders,
    unreadable text), which says nothing about what exists."""
    settings = get_settings()
    configured = (settings.models_root, *settings.model_dirs, *(() if root is None else (Path(root),)))
    resolved_allowed = (*settings.allowed_model_dirs(), *(() if root is None else (Path(root).resolve(),)))
    written_allowed = (*(p.absolute() for p in configured), *resolved_allowed)
    refusal = ModelError(
        f"models can be added only from folders below {', '.join(str(a) for a in resolved_allowed)}.",
        title="Folder not allowed",
        hint=f"Copy the model directory into one of them, or ask the administrator to add its folder "
             f"to {ENV_MODEL_DIRS}.")
    text = str(path).strip()
    if not text or "\x00" in text or ".." in Path(text).parts:
        raise refusal
    candidate = Path(text) if Path(text).is_absolute() else _root(root) / text
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError, ValueError) as err:
        raise refusal from err
    if not (_below(candidate.absolute(), written_allowed) and _below(resolved, resolved_allowed)):
        raise refusal
    return resolved


def install_from_dir(path: str | Path, name: str | None = None, root: str | Path | None = None) -> Path:
    """Copy the model directory ``path`` into ``root`` (default: the models root) as ``name``
    (default: its folder name) and return the new folder. ``path`` must lie below an allowed folder
    (``get_settings().allowed_model_dirs()``: the models root and ``INTENTLENS_MODEL_DIRS``; plus
    ``root`` when given); a relative path is taken below the models root. Anything else, also
    through ``..`` or a symbolic link, gets one ModelError that does not say whether it exists.
    ModelError: not a usable model; ConflictError: the name is taken or it is listed already."""
    src = _allowed_source(path, root)
    if src.is_dir():
        _plain_files(src)                    # before reading anything: no file may lead elsewhere
    load_card(src)                           # a clear message for "not a model directory"
    return _install(src, name or src.name, _root(root))


def delete_model(model_dir: str | Path, root: str | Path | None = None) -> None:
    """Delete a model folder directly under ``root`` (default: the models root) and forget it in
    the cache. The folder is renamed to a hidden name first, so a crash never leaves half a model
    listed. ModelError for anything that is not a model folder there (a link included)."""
    base = _root(root).resolve()
    candidate = Path(model_dir)
    refusal = ModelError(f"{model_dir} is not a model in {base}; only those can be deleted here.",
                         title="Cannot delete")
    if ".." in candidate.parts or candidate.is_symlink():
        raise refusal
    path = candidate.resolve()
    if path.parent != base or not (path / CARD_FILE).is_file():
        raise refusal
    trash = path.with_name(f".{path.name}.deleting-{os.getpid()}")
    os.rename(path, trash)
    _CACHE.evict(str(path))
    shutil.rmtree(trash)
