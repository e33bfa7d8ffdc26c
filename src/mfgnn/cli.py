"""The ``mfgnn`` command: registers the commands of :mod:`mfgnn.commands` and turns
input errors into one message.

    mfgnn train CONFIG --out DIR [--resume]
    mfgnn finetune BASE CONFIG --out DIR [--resume]   (BASE --list-groups)
    mfgnn evaluate RUN_DIR [--data SPEC] [--split test] [--json FILE]
    mfgnn data summary SPEC [--json FILE]
    mfgnn data pack SPEC --out DIR [--chunk-rows N] [--force]
    mfgnn experiment --data SPEC --low NAME --high NAME --train N ... --out DIR
    mfgnn demo [--out DIR] [--max-epochs N] [--max-time S]

``python -m mfgnn`` is the same command. Errors caused by input (bad files, keys,
units) print one message and exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from . import __version__
from .commands import COMMANDS
from .errors import MfgnnError


def _command(name: str):
    return importlib.import_module(f"mfgnn.commands.{COMMANDS[name]}")


#: Libraries whose deprecation notices the command hides: they speak to the authors of
#: code that calls those libraries, not to a user of ``mfgnn`` (e.g. a newer torch's
#: notice about ``torch.jit.script``, raised while torch_geometric is imported).
QUIET_LIBRARIES = r"(torch|torch_geometric|e3nn)(\.|$)"


def quiet_library_warnings() -> None:
    """Hide FutureWarning and DeprecationWarning raised in the libraries of
    :data:`QUIET_LIBRARIES`, unless warnings were configured with ``-W`` or
    ``PYTHONWARNINGS``. The package's own warnings are left alone."""
    if sys.warnoptions:
        return
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=QUIET_LIBRARIES)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mfgnn", description="Multi-fidelity machine-learning interatomic potentials.")
    parser.add_argument("--version", action="version", version=f"mfgnn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = _command(name)
        module.add_arguments(sub.add_parser(name, help=module.HELP))
    return parser


#: Commands that run as one rank of a ``torchrun`` job; the others would repeat the whole
#: job in every process, all writing the same files.
DISTRIBUTED_COMMANDS = ("train",)


def check_launch(command: str) -> None:
    """ConfigError for a command other than ``train`` started by ``torchrun`` with
    several processes."""
    import os

    from .errors import ConfigError

    if command not in DISTRIBUTED_COMMANDS and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ConfigError(f"`mfgnn {command}` runs in one process; of the commands only "
                          "`mfgnn train` runs under torchrun with several processes")


def main(argv: list[str] | None = None) -> int:
    quiet_library_warnings()
    args = build_parser().parse_args(argv)
    try:
        check_launch(args.command)
        return _command(args.command).run(args)
    except MfgnnError as exc:
        if args.debug:
            raise
        print(f"mfgnn: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be read or written, outside the checks
        if args.debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"mfgnn: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mfgnn: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
