"""``python -m pipeline.weights {list,status,verify,download,make-test-weights}`` (see :mod:`pipeline.weights.cli`)."""

from pipeline.weights.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
