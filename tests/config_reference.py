"""Build docs/configuration.md from the config schema: every key of every section with its type,
default, range or choices, and its help, all read from the key's one declaration
(``reid.settings.setting``: in ``reid/config.py``, a head's ``OPTIONS``, ``CenterSettings``).
``python -m tests.config_reference`` rewrites the page; ``test_the_configuration_reference_is_current``
fails when it is stale."""

from __future__ import annotations

import dataclasses
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "configuration.md"


def _type(item) -> str:
    kind = (
        item.type if isinstance(item.type, str) else getattr(item.type, "__name__", str(item.type))
    )
    return str(kind).replace("typing.", "").replace("'", "").replace("NoneType", "None")


def _default(item):
    if item.default is not dataclasses.MISSING:
        return item.default
    return item.default_factory()


def render() -> str:
    from reid.config import SETTINGS, Config

    lines = [
        "# Configuration reference",
        "",
        "Generated from the settings' one declaration each (`reid.settings.setting`: the sections",
        "in `reid/config.py`, each head's own options in its file, the centers' in",
        "`reid/heads/centers.py`) by `python -m tests.config_reference`; a test fails when this",
        "page is stale. A config file holds only what differs from these defaults; `_base_: NAME`",
        "builds on another file (a path beside it, or a packaged config such as",
        "`market1501/bot_r50.yaml`); `section.key=value` overrides on the command line.",
        "Out-of-range values, unknown keys and unknown choices are one error line naming the key.",
        "",
    ]
    for section in dataclasses.fields(Config):
        lines += [f"## `{section.name}`", "", "| key | type | default | valid | meaning |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for item in dataclasses.fields(section.default_factory):
            key = f"{section.name}.{item.name}"
            spec = SETTINGS[key]
            valid = spec.valid().replace("|", "\\|") or (
                "true \\| false" if _type(item) == "bool" else ""
            )
            meaning = spec.help.replace("|", "\\|")
            kind = _type(item).replace("|", "\\|")
            lines.append(f"| `{key}` | {kind} | `{_default(item)}` | {valid} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    PAGE.write_text(render())
    print(f"wrote {PAGE}")
