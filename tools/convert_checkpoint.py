"""`reid convert-checkpoint` (this file keeps `python tools/convert_checkpoint.py` working from a checkout)."""

from reid.cli.convert_checkpoint import get_args_parser, main  # noqa: F401
from reid.logging_utils import tool_main

if __name__ == "__main__":
    tool_main(main, get_args_parser())
