"""Build docs/configuration.md from the config schema: every key of every section with its type,
default, range or choices, and its help (the comment beside or above the field where the schema
declares it). ``python -m tests.config_reference`` rewrites the page;
``test_the_configuration_reference_is_current`` fails when it is stale."""

from __future__ import annotations

import dataclasses
import inspect
import re
import tokenize
from io import StringIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "configuration.md"


def _comments(cls) -> dict[str, str]:
    """field name → the comment on its line, or the comment lines just above it."""
    source = inspect.getsource(cls)
    lines = source.splitlines()
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    out = {}
    for number, line in enumerate(lines, start=1):
        match = re.match(r"\s+(\w+):\s", line)
        if not match:
            continue
        text = comments.get(number)
        if text is None:
            above, n = [], number - 1
            while n in comments and lines[n - 1].strip().startswith("#"):
                above.insert(0, comments[n])
                n -= 1
            text = " ".join(above)
        out[match.group(1)] = text
    return out


def _type(item) -> str:
    return str(item.type).replace("typing.", "").replace("'", "")


def _default(item):
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return "—"


def render() -> str:
    from reid.config import CHOICES, ITEM_RANGES, RANGES, Config, describe_range

    lines = [
        "# Configuration reference",
        "",
        "Generated from the config schema (`reid/config.py` and the sections it takes from the",
        "heads) by `python -m tests.config_reference`; a test fails when this page is stale.",
        "A config file holds only what differs from these defaults; `_base_: NAME` builds on",
        "another file (a path beside it, or a packaged config such as `market1501/bot_r50.yaml`);",
        "`section.key=value` overrides on the command line. Out-of-range values, unknown keys and",
        "unknown choices are one error line naming the key.",
        "",
    ]
    for section in dataclasses.fields(Config):
        cls = section.default_factory
        help_ = _comments(cls)
        lines += [f"## `{section.name}`", "", "| key | type | default | valid | meaning |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for item in dataclasses.fields(cls):
            key = f"{section.name}.{item.name}"
            if key in CHOICES:
                valid = " \\| ".join(f"`{v}`" for v in CHOICES[key])
            elif key in RANGES:
                valid = describe_range(*RANGES[key]).removeprefix("must be in ")
            elif key in ITEM_RANGES:
                valid = "each item " + describe_range(*ITEM_RANGES[key]).removeprefix("must be in ")
            elif _type(item) == "bool":
                valid = "true \\| false"
            else:
                valid = ""
            meaning = help_.get(item.name, "").replace("|", "\\|")
            lines.append(f"| `{key}` | {_type(item)} | `{_default(item)}` | {valid} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    PAGE.write_text(render())
    print(f"wrote {PAGE}")
