"""``python -m pipeline.weights {list,status,verify,download,make-test-weights}`` (see :mod:`pipeline.weights.cli`).

The entry point wires ``verify`` to the known-answer checks of :mod:`pipeline.verification`, which sit above this
package (they load the networks), so no module of :mod:`pipeline.weights` imports them.
"""

from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline.weights.cli import main


def known_answers(weights_dir: Path | None, keys: Iterable[str] | None, out: Callable[[str], None]) -> int:
    """The known-answer checks (:func:`pipeline.verification.verify.verify_command`), imported only for ``verify``."""
    from pipeline.verification.verify import verify_command  # torch and the networks: only when asked

    return verify_command(weights_dir, keys, out)


if __name__ == "__main__":
    raise SystemExit(main(known_answers=known_answers))
