"""maasctl: parse argv, call the library, render, choose an exit code.

Subcommands live in `maas.cli.commands.<name>`, each with `register(subparsers)` and `run(args)`.
Heavy modules (pydantic, docker, pynvml) are imported only inside the command that needs them,
so `maasctl --help` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from maas.cli import exitcodes
from maas.host.discovery import ORDER

COMMANDS = ("validate", "plan", "probe", "schema", "init", "apply", "status", "delete", "logs")
VERSION = "0.1.0"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maasctl",
        description="Declarative model deployments for GPU and CPU inference hosts.",
        epilog="Exit status: 0 success, 1 invalid input or failed operation, 2 usage error, "
        "69 no agent answers, 70 internal error. "
        "Run 'maasctl COMMAND --help' for a command's options. "
        f"Finding the agent: {ORDER}.",
    )
    parser.add_argument("--version", action="version", version=f"maasctl {VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = _command_module(name)
        if module is not None:
            module.register(sub)
    return parser


def _command_module(name: str):  # type: ignore[no-untyped-def]
    try:
        return importlib.import_module(f"maas.cli.commands.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"maas.cli.commands.{name}":
            return None
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return exitcodes.OK
    except Exception as exc:
        from maas.cli.output import report_error

        return report_error(exc)
    return code


if __name__ == "__main__":
    sys.exit(main())
