"""`reid train` (this file keeps `python tools/train.py` working from a checkout)."""

from reid.cli.train import get_args_parser, main  # noqa: F401
from reid.logging_utils import tool_main

if __name__ == "__main__":
    tool_main(main, get_args_parser())
