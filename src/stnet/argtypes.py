"""Ranges of numeric settings, shared by the validated config and the command-line options.

:func:`range_problem` is the one check of a number against its bounds (finite, low, high);
:func:`int_arg` and :func:`float_arg` are ``argparse`` ``type=`` converters built on it, so that
``--clips 0`` or ``--tolerance nan`` is refused while the command line is parsed, as one line that says
which values are allowed, instead of failing later with a traceback.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

MAX_WORKERS = 64  # worker processes; more than this only costs memory (each holds a decoder and a copy)
MAX_SEED = 2**32 - 1  # NumPy's seeds are 32-bit


def range_problem(
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> str | None:
    """Why ``value`` is outside its range (``"it must be >= 1"``), or None when it is inside.

    NaN and infinities are never inside: no setting means anything with them.
    """

    def show(bound: float) -> str:
        return f"{bound:g}" if isinstance(bound, float) else str(bound)

    if isinstance(value, float) and not math.isfinite(value):
        bounds = [f"{'>' if low_open else '>='} {show(low)}"] if low is not None else []
        bounds += [f"{'<' if high_open else '<='} {show(high)}"] if high is not None else []
        return "it must be a finite number" + (f" {' and '.join(bounds)}" if bounds else "")
    if low is not None and (value < low or (low_open and value == low)):
        return f"it must be {'>' if low_open else '>='} {show(low)}"
    if high is not None and (value > high or (high_open and value == high)):
        return f"it must be {'<' if high_open else '<='} {show(high)}"
    return None


def int_arg(low: int | None = None, high: int | None = None, *, why: str = "") -> Callable[[str], int]:
    """An argparse ``type=``: an integer in ``[low, high]``; ``why`` is added to the out-of-range message."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        problem = range_problem(value, low, high)
        if problem:
            above = high is not None and value > high
            raise argparse.ArgumentTypeError(f"{value} is out of range; {problem}{why if above else ''}")
        return value

    return parse


def float_arg(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], float]:
    """An argparse ``type=``: a finite number in the range (open ends with ``low_open``/``high_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        problem = range_problem(value, low, high, low_open=low_open, high_open=high_open)
        if problem:
            raise argparse.ArgumentTypeError(f"{text} is out of range; {problem}")
        return value

    return parse


WORKERS_WHY = f" (more worker processes only cost memory; {MAX_WORKERS} is the most stnet starts)"


def workers_arg(low: int = 0) -> Callable[[str], int]:
    """An argparse ``type=`` for a number of worker processes: ``low`` to :data:`MAX_WORKERS`."""
    return int_arg(low, MAX_WORKERS, why=WORKERS_WHY)
