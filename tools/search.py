"""`reid search` (this file keeps `python tools/search.py` working from a checkout)."""

from reid.cli.search import get_args_parser, main  # noqa: F401
from reid.logging_utils import tool_main

if __name__ == "__main__":
    tool_main(main, get_args_parser())
