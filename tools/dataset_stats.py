"""`reid stats` (this file keeps `python tools/dataset_stats.py` working from a checkout)."""

from reid.cli.dataset_stats import get_args_parser, main  # noqa: F401
from reid.logging_utils import tool_main

if __name__ == "__main__":
    tool_main(main, get_args_parser())
