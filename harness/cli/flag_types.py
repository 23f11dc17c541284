"""The parser class and the argparse `type=` functions of the flags (harness/cli/flags.py uses them)."""
from __future__ import annotations

import argparse

from harness.config import parse_seeds
from harness.errors import HarnessError

DEFAULT_BACKENDS = "torch,torch-compile,jax"


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one error line (no usage dump) and exit code 2."""

    def error(self, message: str):
        raise HarnessError(f"{self.prog}: {message}")


def _number(text: str, cast, minimum, problem: str):
    """Parse a flag value as int or float and enforce a lower bound, for argparse's `type=`."""
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if cast is int else 'a number'}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} is {problem}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(text, int, 1, "not a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(text, int, 0, "negative")


def non_negative_float(text: str) -> float:
    """argparse type: a number >= 0."""
    return _number(text, float, 0.0, "negative")


def backend_list(text: str) -> tuple[str, ...]:
    """argparse type: 'torch,jax' -> ('torch', 'jax'); the names are checked against the registry later."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("no backend named")
    return names


def device_list(text: str) -> list[str]:
    """argparse type of a sweep's --device: 'cpu,cuda' -> ['cpu', 'cuda']."""
    return [d.strip() for d in text.split(",") if d.strip()]


def seed_list(text: str) -> list[int]:
    """argparse type: '1-5' or '1,3,7' (harness.config.parse_seeds)."""
    try:
        return parse_seeds(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed list like 1-5 or 1,3,7") from None


def engine_option(text: str) -> tuple[str, str, str]:
    """argparse type of --engine-option: 'jax.epoch=loop' -> ('jax', 'epoch', 'loop')."""
    target, sep, value = text.partition("=")
    backend, dot, option = target.rpartition(".")
    if not (sep and dot and backend and option and value):
        raise argparse.ArgumentTypeError(f"{text!r} is not BACKEND.OPTION=VALUE (like jax.epoch=loop)")
    return backend, option, value
