"""The one-line error convention of every stage script, logging and seeding."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import random
import sys
from typing import Any, Callable, Sequence

# --------------------------------------------------------------------------------------
# Errors and the CLI convention
# --------------------------------------------------------------------------------------


class UserError(Exception):
    """A mistake in the user's input (flag, file, line). Reported as one line, exit code 2."""


class ArchError(UserError, ValueError):
    """An arch dict that does not match the schema or does not fit the search space."""


def os_problem(err: OSError) -> str:
    """An OS refusal in words (``strerror`` names a link loop too tersely)."""
    return "a loop of symbolic links" if err.errno == errno.ELOOP else (err.strerror or str(err))


def run_cli(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> None:
    """Run a stage's ``main`` and turn user mistakes into one line on stderr and exit code 2.

    Programming errors still raise with a traceback: only ``UserError`` is the user's fault, and an
    ``OSError`` naming a path (no permission, a read-only or virtual file system such as /sys, a link
    loop, a full disk), which stages check for where they can but which no check can rule out.
    Off a terminal, the libraries' progress bars are turned off (``utils.progress``).
    """
    from utils.progress import quiet_library_bars

    quiet_library_bars()
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "bigger_and_faster"
    try:
        code = main(argv)
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if err.filename is None:
            raise
        print(f"{prog}: error: {err.filename}: {os_problem(err)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and a re-run resumes", file=sys.stderr)
        sys.exit(130)
    sys.exit(int(code or 0))


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser for flags that come from a variable (a search's ``EVAL_ARGS``): a usage error
    is a one-line ``UserError`` naming the variable, not argparse's usage text and exit."""

    def __init__(self, *args, where: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.where = where

    def error(self, message: str):
        raise UserError(f"{self.where}: {message}")

    def only_given(self) -> "OneLineParser":
        """Parse to the flags given and nothing else: every default becomes ``argparse.SUPPRESS``."""
        for action in self._actions:
            action.default = argparse.SUPPRESS
        self._defaults.clear()  # set_defaults values (e.g. a stage's space role) are not flags given
        return self


def get_logger(name: str) -> logging.Logger:
    """A logger with the timestamped format used by every stage (HF examples style)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
            datefmt="%H:%M:%S",
            level=os.environ.get("BAF_LOG_LEVEL", "INFO"),
        )
    return logging.getLogger(name)


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (the single place that does it)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
