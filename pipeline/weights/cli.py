"""Command line for the weights: ``python -m pipeline.weights {list,status,verify,download,make-test-weights}``.

Kept apart from the library modules (registry, checks, download, stand_in) so they never import argparse. Each
subcommand is a ``_cmd_<name>(args) -> int`` function registered in :func:`build_parser`; add new ones the same way.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from pipeline.errors import WeightsError
from pipeline.weights.checks import WeightState, format_status, weights_status
from pipeline.weights.download import resolve_weight
from pipeline.weights.registry import REGISTRY, download_url, resolve_weights_dir

OK_STATES = frozenset({WeightState.VERIFIED, WeightState.PRESENT, WeightState.STAND_IN})  # usable (stand-ins to test)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _registry_key(text: str) -> str:
    if text not in REGISTRY:
        raise argparse.ArgumentTypeError(f"unknown weight {text!r}; choose from {', '.join(REGISTRY)}")
    return text


def _cmd_list(args: argparse.Namespace) -> int:
    """Print every registry entry: file, Hub source, known size/sha256, licence, purpose."""
    for spec in REGISTRY.values():
        _out(f"{spec.key}: {spec.filename}")
        _out(f"  purpose:  {spec.purpose}")
        _out(f"  hub:      {download_url(spec)} ({spec.revision_note})")
        _out(f"  override: {spec.repo_env}, {spec.revision_env}")
        _out(f"  size:     {spec.size if spec.size is not None else 'not registered (checked against the Hub)'}")
        _out(f"  sha256:   {spec.sha256 or 'not registered (checked against the Hub)'}")
        if spec.package:
            _out(f"  package:  {spec.package}/{spec.package_path}")
        _out(f"  licence:  {spec.licence}")
        _out(f"  by hand:  {spec.manual_source}")
    return 0


def _report_status(args: argparse.Namespace, *, verify: bool) -> int:
    statuses = weights_status(args.weights_dir, keys=args.keys or None, verify=verify)
    _out(f"weights folder: {resolve_weights_dir(args.weights_dir)}")
    _out(format_status(statuses))
    return 0 if all(status.state in OK_STATES for status in statuses) else 1


def _cmd_status(args: argparse.Namespace) -> int:
    """Report present/verified/missing files without hashing (instant, no network)."""
    return _report_status(args, verify=False)


def _cmd_verify(args: argparse.Namespace) -> int:
    """Hash every file that has a reference checksum, then run the known-answer checks if given (no network)."""
    hashed = _report_status(args, verify=True)
    if args.known_answers is None:
        return hashed
    return max(hashed, args.known_answers(args.weights_dir, args.keys or None, _out))


def _cmd_download(args: argparse.Namespace) -> int:
    """Resolve the requested files, downloading what is missing; exit 1 if any fails."""
    failures = 0
    for key in args.keys or list(REGISTRY):
        try:
            path = resolve_weight(key, weights_dir=args.weights_dir)
        except WeightsError as err:
            failures += 1
            _err(f"{key}: FAILED\n{err}")
            continue
        _out(f"{key}: {path}")
    return 1 if failures else 0


def _cmd_make_test_weights(args: argparse.Namespace) -> int:
    """Write seeded random stand-in weights (real names and formats) into a folder, for tests and smoke runs."""
    from pipeline.weights.stand_in import STAND_IN_NOTE, write_stand_in_weights  # imports every network: on demand

    try:
        seed = {} if args.seed is None else {"seed": args.seed}
        paths = write_stand_in_weights(args.directory, overwrite=args.force, **seed)
    except (FileExistsError, OSError) as err:
        _err(f"make-test-weights: {err}")
        return 1
    for key, path in paths.items():
        _out(f"{key}: {path}")
    _out(f"{STAND_IN_NOTE} Use them with C2F_WEIGHTS_DIR={args.directory}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.weights", description="List, check and download the app's pretrained weights."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="log what is being done")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Callable[[argparse.Namespace], int], help_text: str, *, takes_keys: bool
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, parents=[common])
        sub.set_defaults(handler=handler)
        if takes_keys:
            sub.add_argument(
                "keys", nargs="*", type=_registry_key, metavar="KEY", help=f"{', '.join(REGISTRY)} (default: all)"
            )
            sub.add_argument("--weights-dir", default=None, help="default: $C2F_WEIGHTS_DIR, else checkpoints/")
        return sub

    add("list", _cmd_list, "show the registry (files, sources, checksums, licences)", takes_keys=False)
    add("status", _cmd_status, "show which files are verified, present or missing (no hashing)", takes_keys=True)
    add(
        "verify",
        _cmd_verify,
        "hash the local files, then check that the models reproduce the official examples (known answers)",
        takes_keys=True,
    )
    add("download", _cmd_download, "fetch missing files from the Hub and verify them", takes_keys=True)
    make = add(
        "make-test-weights",
        _cmd_make_test_weights,
        "write small random stand-in weights in the real formats (not real results)",
        takes_keys=False,
    )
    make.add_argument("directory", help="folder to write into (created if needed)")
    make.add_argument("--seed", type=int, help="seed of the random weights (default: the parity fixtures' seed)")
    make.add_argument("--force", action="store_true", help="replace existing files in the folder")
    return parser


KnownAnswers = Callable[..., int]
"""``verify``'s second half: (weights folder, keys, print function) → exit code."""


def main(argv: list[str] | None = None, *, known_answers: KnownAnswers | None = None) -> int:
    """Run the command line; returns the process exit code.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
        known_answers: what ``verify`` runs after hashing. ``python -m pipeline.weights`` passes the known-answer
            checks of :mod:`pipeline.verification`, which load the networks; this package never imports them (they
            sit above it), so without it ``verify`` only hashes.
    """
    args = build_parser().parse_args(argv)
    args.known_answers = known_answers
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
