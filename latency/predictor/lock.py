"""One writer per predictor directory, and no writer while a search reads it.

``writing(directory)`` is ``utils.output_lock`` (an exclusive ``flock`` on the directory's lock file):
``latency_predictor.py`` holds it while it trains and writes. ``reading(paths)`` takes a *shared*
``flock`` on the same file of every predictor's directory for as long as a search runs, so the
predictors a search reads cannot be rewritten under it (the writer is refused in one line) while
any number of searches read them at once. A directory this process cannot write (the authors'
predictors on a read-only disk) is read without a hold: nobody can rewrite it either.
"""

from __future__ import annotations

import contextlib
import os

from utils import OutputLocked, UserError, output_lock
from utils.files import LOCK_NAME

WHAT = "latency predictor directory"


@contextlib.contextmanager
def writing(directory: str | os.PathLike):
    """Hold ``directory`` as its one writer; refused in one line while a search reads it."""
    try:
        with output_lock(directory, what=WHAT):
            yield
    except OutputLocked as err:
        text = str(err)
        if " is in use by another process;" in text:  # readers leave no holder line
            text = text.replace("in use by another process", "in use (searches are reading its predictors)")
        raise UserError(text) from None


@contextlib.contextmanager
def reading(paths):
    """Shared holds on the directories of the predictor checkpoints ``paths`` (the search's whole run)."""
    import fcntl

    descriptors = []
    try:
        for directory in sorted({os.path.dirname(os.path.abspath(os.fspath(path))) for path in paths if path}):
            try:
                fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o666)
            except OSError:
                continue  # read-only or missing: nothing can rewrite it from here
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise UserError(f"{directory}: the {WHAT} is being written by {holder}; wait until its predictors "
                                "are trained before searching with them") from None
            descriptors.append(fd)
        yield
    finally:
        for fd in descriptors:
            os.close(fd)  # closing releases the shared hold
