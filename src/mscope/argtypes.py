"""argparse types shared by mscope's commands: one-line errors for bad numbers."""
import argparse

__all__ = ["seconds", "non_negative", "positive", "share", "positive_int", "nf_rate"]


def _finite_non_negative(text, what):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what} >= 0")
    return value


def seconds(text):
    """A duration in seconds: a finite number >= 0."""
    return _finite_non_negative(text, "a number of seconds")


def non_negative(text):
    """A finite number >= 0 (milliseconds, megabytes, rates...)."""
    return _finite_non_negative(text, "a number")


def positive(text):
    """A finite number > 0."""
    value = _finite_non_negative(text, "a number")
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number > 0")
    return value


def share(text):
    """A share of a whole: a number from 0 to 1."""
    value = _finite_non_negative(text, "a share")
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share from 0 to 1")
    return value


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def nf_rate(text):
    """``NAME=MPPS``: an NF's name and a rate in Mpps, finite and > 0."""
    name, eq, rate = text.rpartition("=")
    if not eq or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NF=MPPS (e.g. nat=3.3)")
    try:
        value = float(rate)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{rate!r} is not a rate in Mpps > 0")
    return name, value
