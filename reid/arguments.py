"""Typed command-line values: every numeric flag of every tool declares its range here.

``Int(1, 65536)`` and ``Float(0, 1, low_open=True)`` are argparse ``type=`` callables that parse
and check in one step, so a bad value (0, −1, a huge number, a word) ends in one ``error: …`` line
before any work; ``device`` accepts only a device this machine has. The suite walks every tool's
parser and tries the values just outside each declared range (``tests/test_arguments.py``): a new
numeric flag without a range fails that test.
"""

from __future__ import annotations

import argparse
import math
import re

import torch


class Bounded:
    """A number in ``[low, high]`` (either end open on request, either end optional)."""

    def __init__(self, kind, low=None, high=None, low_open=False, high_open=False):
        self.kind, self.low, self.high = kind, low, high
        self.low_open, self.high_open = low_open, high_open
        self.__name__ = kind.__name__

    def describe(self) -> str:
        name = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{name} in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{name} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{name} {'<' if self.high_open else '<='} {self.high:g}"
        return name

    def contains(self, value) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (
            self.high is not None and (value > self.high or (self.high_open and value == self.high))
        )

    def __call__(self, text: str):
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None
        if self.kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        if not self.contains(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        return value

    def __repr__(self) -> str:
        return f"Bounded({self.describe()})"


def Int(low=None, high=None) -> Bounded:  # noqa: N802 - reads like a type in parser code
    return Bounded(int, low, high)


def Float(low=None, high=None, low_open=False, high_open=False) -> Bounded:  # noqa: N802
    return Bounded(float, low, high, low_open, high_open)


#: the ranges the tools share
BATCH = Int(1, 65536)
WORKERS = Int(0, 64)
TOPK = Int(1, 100000)
SEED = Int(0, 2**32 - 1)
PID = Int(0, 2**31 - 1)
RATE = Float(0, 1, low_open=True, high_open=True)  # a false-alarm or false-positive rate
SCORE = Float(-1, 1)  # a cosine score

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def check_device(text: str, source: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` that exists here; otherwise a message naming ``source``."""
    if not _DEVICE.match(text):
        raise ValueError(f"{source}={text!r}: valid devices are cpu, cuda, cuda:N")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"{source}={text!r}: CUDA is not available on this machine; use cpu")
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"{source}={text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return text


def device(text: str) -> str:
    """argparse type of ``--device``."""
    try:
        return check_device(text, "--device")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None


def add_runtime(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runtime",
        choices=("torch", "onnxruntime", "openvino"),
        default=None,
        help="what runs an exported model (.onnx: onnxruntime or openvino; default: the runtime "
        "its export was verified with); a checkpoint runs on torch",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        type=device,
        default=None,
        help="cpu, cuda or cuda:N (default: cuda if available)",
    )
