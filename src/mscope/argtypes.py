"""argparse types shared by mscope's commands: one-line errors for bad numbers."""
import argparse

__all__ = ["seconds", "non_negative", "positive_int"]


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


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value
