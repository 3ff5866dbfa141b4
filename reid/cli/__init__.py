"""``reid``: one command with a subcommand per tool (``reid --help`` lists them).

Each subcommand is a module of this package with ``get_args_parser()`` and ``main(args)``; the
command runs it through ``logging_utils.tool_main`` (one ``error: …`` line and exit 2 for an
expected failure), exactly as ``python tools/NAME.py`` does from a checkout.
"""

from __future__ import annotations

import importlib
import re
import sys
from importlib.metadata import PackageNotFoundError, version

from .commands import COMMANDS


def _version() -> str:
    try:
        return version("reid")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _summary(name: str) -> str:
    doc = " ".join((importlib.import_module(f"reid.cli.{COMMANDS[name]}").__doc__ or "").split())
    return re.split(r"(?<=[a-z)])\. ", doc, maxsplit=1)[0].rstrip(".")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: reid COMMAND [options]   (reid COMMAND --help: its options and an example)",
        "",
        "Person re-identification: train, evaluate, index and search, serve.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {_summary(name)}" for name in COMMANDS]
    lines += ["", "options:", "  -h, --help  this list", "  --version   the installed version"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from ..logging_utils import tool_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    if argv[0] == "--version":
        print(f"reid {_version()}")
        return
    name = argv[0]
    if name not in COMMANDS:
        close = [c for c in COMMANDS if c.startswith(name[:3])]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        print(f"error: unknown command {name!r}{hint}; reid --help lists them", file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(f"reid.cli.{COMMANDS[name]}")
    parser = module.get_args_parser()
    parser.prog = f"reid {name}"
    sys.argv = [f"reid {name}", *argv[1:]]
    tool_main(module.main, parser)
