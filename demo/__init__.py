"""The embedded demo's data (SPEC section 9): a synthetic corpus, a synthetic NLI task in the GLUE
MNLI layout and a WordPiece vocab trained on the corpus, all seeded. ``demo_data.py`` is the CLI.

Modules: ``world`` (people, slots, phrasings, genres, the labelling rule), ``corpus``, ``nli``
(examples and the TSV layout), ``vocab`` (``tokenizers`` WordPiece), ``build`` (the directory,
manifest and atomic swap).
"""

from demo.build import DEMO_DATA_VERSION, MANIFEST_NAME, DemoDataParams, build_demo_data, read_manifest

__all__ = ["DEMO_DATA_VERSION", "MANIFEST_NAME", "DemoDataParams", "build_demo_data", "read_manifest"]
