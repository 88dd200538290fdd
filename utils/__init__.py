"""Shared helpers of Bigger&Faster, at the bottom of the import graph (no project import points
from here upwards). Each concern has its own module; everything is re-exported here, so stages
write ``from utils import arch_key, SPACES, ...``:

* ``utils.cli``      -- ``UserError`` / ``ArchError``, ``run_cli`` (one line, exit 2), logging, seeding;
* ``utils.files``    -- atomic writes, kill-safe JSON lines, one writer per output directory;
* ``utils.arch``     -- the arch dict: schema, validation, ``arch_key``, parsing;
* ``utils.arch_files`` -- arch files (JSON lines, the original's repr lines), read and written;
* ``utils.space``    -- a search space: grids, validation, sampling, enumeration, mutation;
* ``utils.space_catalog`` -- the named spaces, their families, space files and the records artefacts keep;
* ``utils.stage_space``   -- how a stage picks its space (one rule), the --space flags, coverage checks;
* ``utils.features`` -- the latency predictor's features;
* ``utils.cpu``      -- the CPU's model and features (``native_bf16``);
* ``utils.vocab``    -- the vocab file (``load_vocab``, ``SPECIAL_TOKENS``);
* ``utils.timing_slot`` -- the machine's latency-timing slot, and fine-tunes pausing while it is held;
* ``utils.progress`` -- progress bars on a terminal, plain lines in a log (imported as ``utils.progress``).
"""

from utils.arch import *  # noqa: F401,F403
from utils.arch import _is_int  # noqa: F401
from utils.arch_files import *  # noqa: F401,F403
from utils.cli import *  # noqa: F401,F403
from utils.cpu import *  # noqa: F401,F403
from utils.features import *  # noqa: F401,F403
from utils.files import *  # noqa: F401,F403
from utils.space import *  # noqa: F401,F403
from utils.space_catalog import *  # noqa: F401,F403
from utils.stage_space import *  # noqa: F401,F403
from utils.timing_slot import *  # noqa: F401,F403
from utils.vocab import *  # noqa: F401,F403
