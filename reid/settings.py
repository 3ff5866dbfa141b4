"""A setting declared once: its type (the field's annotation), default, help, and its range or
choices, in one :func:`setting` call where the setting lives (a config section in
``config.py``, a head's ``OPTIONS`` in its own file, ``CenterSettings`` beside the centers).
The config schema, its range and choice checks, the flags that mirror a setting and the
configuration reference (``docs/configuration.md``) are all read from here.

Ranges are ``reid.arguments.Bounded``: the one range system of flags and keys.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields

from .arguments import Bounded


@dataclass(frozen=True)
class Setting:
    default: object
    help: str
    bounds: Bounded | None = None  # a number's range
    choices: tuple | None = None  # the valid values of a choice
    items: Bounded | None = None  # a list's items' range

    def check(self, value) -> str | None:
        """Why ``value`` is not valid here (None: it is). ``None`` values are the schema's
        business (an optional setting left unset)."""
        if value is None:
            return None
        if self.choices is not None and value not in self.choices:
            return f"unknown value; valid: {', '.join(map(str, self.choices))}"
        if self.bounds is not None and not self.bounds.contains(value):
            return f"must be {self.bounds.describe()}"
        if self.items is not None and any(not self.items.contains(v) for v in value):
            return f"every item must be {self.items.describe()}"
        return None

    def valid(self) -> str:
        """What is valid, in words (the configuration reference's column)."""
        if self.choices is not None:
            return " | ".join(map(str, self.choices))
        if self.bounds is not None:
            return self.bounds.describe()
        if self.items is not None:
            return "each item " + self.items.describe()
        return ""


def setting(
    default, help: str, bounds: Bounded | None = None, *, choices=None, items=None
) -> Field:
    """A dataclass field declaring a setting (a list default is copied per instance)."""
    spec = Setting(default, help, bounds, tuple(choices) if choices is not None else None, items)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"setting": spec})
    return field(default=default, metadata={"setting": spec})


def settings_of(cls) -> dict[str, Setting]:
    """Each field of the dataclass ``cls`` → its :class:`Setting` (every field must have one)."""
    out = {}
    for item in fields(cls):
        spec = item.metadata.get("setting")
        if spec is None:
            default = item.default if item.default is not MISSING else None
            raise TypeError(
                f"{cls.__name__}.{item.name}: declare it with setting({default!r}, help)"
            )
        out[item.name] = spec
    return out
