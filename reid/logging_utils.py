"""One logging set-up call for the tools; the library only uses ``logging.getLogger(__name__)``."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def tool_main(main, parser) -> None:
    """Run a tool's ``main(args)``; bad input becomes one clear line and exit status 2."""
    from .config import ConfigError
    from .data.records import DatasetError
    from .index import IndexError_

    setup_logging()
    args = parser.parse_args()
    try:
        main(args)
    except (DatasetError, ConfigError, IndexError_, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
