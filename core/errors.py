"""One typed error family for everything a user can cause.

Every error carries a short user-facing ``title`` and a ``message`` that says what was wrong
and what to do next. Pages and the CLI show ``str(err)``; nobody sees a traceback.
"""
from __future__ import annotations


class IntentLensError(Exception):
    """Base of all project errors. ``title`` is a few words, ``message`` the whole story."""

    title = "IntentLens error"

    def __init__(self, message: str, *, title: str | None = None, hint: str | None = None):
        self.message = message
        self.hint = hint
        if title is not None:
            self.title = title
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.title}: {self.message}"
        if self.hint:
            text += f" {self.hint}"
        return text


class StoreError(IntentLensError):
    """The database refused an operation (locked file, corrupt file, SQL failure)."""

    title = "Database error"


class DataError(IntentLensError):
    """An input file or column map is not a behaviour log we can read."""

    title = "Cannot read this file"


class NotFoundError(IntentLensError):
    """A dataset, user, model or job that does not exist."""

    title = "Not found"


class ConflictError(IntentLensError):
    """The operation would overwrite something that exists (dataset name without --replace)."""

    title = "Already exists"


class ModelError(IntentLensError):
    """A model directory that is not a valid or compatible IntentLens model."""

    title = "Model cannot be used"


class EligibilityError(IntentLensError):
    """Too few positives or negatives to train or evaluate a model."""

    title = "Not enough data to train"


class ReadOnlyError(IntentLensError):
    """A write was attempted in demo (read-only) mode."""

    title = "Demo mode is read-only"
