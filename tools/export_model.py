"""`reid export-model` (this file keeps `python tools/export_model.py` working from a checkout)."""

from reid.cli.export_model import get_args_parser, main  # noqa: F401
from reid.logging_utils import tool_main

if __name__ == "__main__":
    tool_main(main, get_args_parser())
