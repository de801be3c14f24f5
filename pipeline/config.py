"""Named constants of the method (paper / official code values), shared by every stage.

Stage-specific settings live in frozen dataclasses next to the code that uses them; the end-to-end settings that the
UI and CLI expose are collected in :class:`pipeline.settings.RemovalSettings`.
"""

from __future__ import annotations

from pathlib import Path

ALIGNED_SIZE = 1024  # FFHQ crop size and StyleGAN2 FFHQ output resolution (METHOD.md §2, §3)
NUM_WS = 18  # W+ rows of the 1024² config-f generator: 2·log2(1024) − 2
W_DIM = 512  # width of W / each W+ row
ENCODER_INPUT_SIZE = 256  # e4e input resolution (METHOD.md §2b)
PARSER_INPUT_SIZE = 512  # BiSeNet input resolution (METHOD.md §6)
NUM_LANDMARKS = 68  # dlib's iBUG 300-W landmark scheme (METHOD.md §2)

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS_DIR = REPO_ROOT / "checkpoints"  # default weights cache; overridable (see pipeline.weights)
BOUNDARIES_DIR = CHECKPOINTS_DIR / "boundaries"  # the authors' boundaries, shipped with the app
EXAMPLES_DIR = REPO_ROOT / "examples"
