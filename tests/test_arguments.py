"""Every numeric, choice and device flag of every tool, and every numeric config key, generated
from the parsers and the schema: a value outside the declared range (0, −1, a huge value, a
non-number, as they apply) is one ``error: …`` line with exit status 2 before any work, and a
value inside it is accepted. A new flag or key is covered without a new test; one without a
declared range fails here."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import typing

import pytest

from reid.arguments import Bounded
from reid.config import BOOLEAN_KEYS, ITEM_RANGES, RANGES, Config, ConfigError, load_config
from reid.heads import ALL_HEAD_OPTIONS, HEADS
from reid.logging_utils import one_line_parse_errors
from tests.conftest import REPO

TOOLS = sorted(p.stem for p in (REPO / "tools").glob("*.py"))
CANONICAL = ("0", "-1", "1e12", "abc")


def load_tool(tool: str):
    """The module of ``tools/TOOL.py`` (its ``main`` and ``get_args_parser``)."""
    spec = importlib.util.spec_from_file_location(f"tool_{tool}", REPO / "tools" / f"{tool}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parser_of(tool: str) -> argparse.ArgumentParser:
    parser = load_tool(tool).get_args_parser()
    one_line_parse_errors(parser)
    return parser


def flags(parser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


def minimal_argv(parser, skip: argparse.Action) -> list[str]:
    """Values for the required arguments (and one of each required group), so that a parse
    fails only on the flag under test."""
    argv = []
    groups = [g for g in parser._mutually_exclusive_groups if g.required]
    chosen = {id(g._group_actions[0]) for g in groups if skip not in g._group_actions}
    for action in parser._actions:
        if action is skip or action.dest == "help":
            continue
        if not action.option_strings:  # positional
            argv += ["x"] if action.nargs not in ("*", "?") else []
        elif action.required or id(action) in chosen:
            argv += [action.option_strings[0], valid_value(action)]
    return argv


def valid_value(action: argparse.Action) -> str:
    if isinstance(action.type, Bounded):
        low = action.type.low if action.type.low is not None else 0
        value = low + 1 if action.type.low_open or action.type.kind is int else low
        if action.type.high is not None and not action.type.contains(value):
            value = (action.type.low + action.type.high) / 2
        return str(action.type.kind(value)) if action.type.kind is int else repr(float(value))
    if action.choices:
        return str(list(action.choices)[0])
    return "x"


def cases():
    for tool in TOOLS:
        for action in flags(parser_of(tool)):
            if isinstance(action.type, Bounded) or action.type in (int, float) or action.choices:
                yield pytest.param(
                    tool, action.option_strings[0], id=f"{tool}{action.option_strings[0]}"
                )
            elif action.dest == "device":
                yield pytest.param(tool, action.option_strings[0], id=f"{tool}--device")


def inside(kind: Bounded, text: str) -> bool:
    """Whether ``text`` lies in the declared range (integers written as integers)."""
    try:
        value = float(text)
    except ValueError:
        return False
    if kind.kind is int and (not text.lstrip("-").isdigit()):
        return False
    return math.isfinite(value) and kind.contains(value)


def parse(tool: str, option: str, value: str, capsys):
    parser = parser_of(tool)
    action = next(a for a in flags(parser) if option in a.option_strings)
    repeat = action.nargs if isinstance(action.nargs, int) else 1  # e.g. --image-size H W
    argv = minimal_argv(parser, action) + [option] + [value] * repeat
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        err = capsys.readouterr().err.strip()
        return exc.code, err, action
    return 0, getattr(args, action.dest), action


def test_every_numeric_flag_declares_a_range():
    raw = [
        f"{tool} {a.option_strings[0]}"
        for tool in TOOLS
        for a in flags(parser_of(tool))
        if a.type in (int, float)
    ]
    assert not raw, f"numeric flags without a declared range (use reid.arguments): {raw}"


@pytest.mark.parametrize("tool, option", list(cases()))
def test_flag_values_outside_the_range_are_one_line(tool, option, capsys):
    parser = parser_of(tool)
    action = next(a for a in flags(parser) if option in a.option_strings)
    if action.dest == "device":
        candidates = ["tpu", "cpufoo", "cuda:99"]
        expect = {v: False for v in candidates} | {"cpu": True}
    elif action.choices:
        expect = {"not-a-choice": False, str(list(action.choices)[0]): True}
    else:
        kind = action.type
        values = list(CANONICAL)
        if kind.low is not None:  # just below / at an open lower end
            values.append(str(kind.low - 1) if kind.kind is int else repr(kind.low - 1e-9))
        if kind.high is not None:
            values.append(str(kind.high + 1) if kind.kind is int else repr(kind.high * 1.000001))
        expect = {text: inside(kind, text) for text in values}
        expect[valid_value(action)] = True
    for value, ok in expect.items():
        code, out, _ = parse(tool, option, value, capsys)
        if ok:
            assert code == 0, (value, out)
        else:
            assert code == 2, f"{tool} {option} {value!r} was accepted"
            assert len(out.splitlines()) == 1 and out.startswith("error: argument "), out
            assert "Traceback" not in out and option.split("=")[0] in out, out


def numeric_keys():
    for section in dataclasses.fields(Config):
        for item in dataclasses.fields(section.default_factory()):
            hint = typing.get_type_hints(type(section.default_factory()))[item.name]
            args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
            base = typing.get_origin(hint) or hint
            if base is list and typing.get_args(hint)[0] in (int, float):
                yield f"{section.name}.{item.name}", "list"
            elif args[0] in (int, float) and args[0] is not bool:
                yield f"{section.name}.{item.name}", args[0]


def test_every_numeric_config_key_declares_a_range():
    missing = [
        k for k, kind in numeric_keys() if k not in (ITEM_RANGES if kind == "list" else RANGES)
    ]
    assert not missing, (
        f"numeric config keys declared without a range (setting(..., bounds)): {missing}"
    )


def context(key: str) -> list[str]:
    """Overrides that make ``key`` apply (a head option needs a head that has it)."""
    option = key.split(".")[1]
    if key.startswith("head.") and option in ALL_HEAD_OPTIONS:
        head = next(name for name, cls in HEADS.items() if option in cls.OPTIONS)
        return [f"head.name={head}"]
    return []


@pytest.mark.parametrize("key", [k for k, kind in numeric_keys() if kind != "list"])
def test_config_values_outside_the_range_are_refused_at_load(key):
    bounds = RANGES[key]
    low, high, low_open, high_open = bounds.low, bounds.high, bounds.low_open, bounds.high_open
    kind = dict(numeric_keys())[key]
    step = 1 if kind is int else max(1e-6, 1e-6 * abs(high))
    outside = [low - step, high + step, "abc", -1e12, 1e12]
    if low_open:
        outside.append(low)
    if high_open:
        outside.append(high)
    for value in outside:
        if isinstance(value, float) and kind is int:
            value = int(value) if math.isfinite(value) else value
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(None, [*context(key), f"{key}={value}"])
    inside = low if not low_open else (low + high) / 2
    load_config(None, [*context(key), f"{key}={kind(inside)}"])


@pytest.mark.parametrize("key", sorted(BOOLEAN_KEYS))
def test_boolean_config_keys_take_true_or_false_only(key, tmp_path):
    """OmegaConf alone reads any number as true (``data.flip=2`` would be on); every boolean
    key refuses numbers other than 1 / 0 and words that are no boolean, naming the key, in an
    override and in a YAML file alike, and takes true, false, 1 and 0."""
    for value in ("2", "-1", "0.5", "1e12", "maybe", "null"):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(None, [*context(key), f"{key}={value}"])
    section, option = key.split(".")
    (tmp_path / "c.yaml").write_text(f"{section}:\n  {option}: 2\n")
    with pytest.raises(ConfigError, match=rf"c\.yaml: {section}\.{option}: 2 is not a boolean"):
        load_config(tmp_path / "c.yaml", context(key))
    needs = ["model.init_from=parent/last.pt"] if key == "model.init_head" else []
    for value, expect in (("true", True), ("false", False), ("1", True), ("0", False)):
        config = load_config(None, [*context(key), *needs, f"{key}={value}"])
        assert config[section][option] is expect
