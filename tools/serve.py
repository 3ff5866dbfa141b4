"""`reid serve` (this file keeps `python tools/serve.py` working from a checkout)."""

from reid.cli.serve import get_args_parser, main  # noqa: F401
from reid.logging_utils import tool_main

if __name__ == "__main__":
    tool_main(main, get_args_parser())
