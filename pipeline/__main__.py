"""``python -m pipeline IMAGE [IMAGE ...] -o OUTDIR``: the command line (see :mod:`pipeline.cli`)."""

from pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
