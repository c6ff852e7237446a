"""The exceptions mscope raises at its boundaries.

Each also subclasses the builtin a caller would expect, so
``except ValueError`` catches a malformed file as well as
``except MscopeError`` does.
"""
__all__ = ["MscopeError", "RingFormatError", "RingClaimedError",
           "CaptureFormatError", "NativeBuildError"]


class MscopeError(Exception):
    """Base of every mscope error."""


class RingFormatError(MscopeError, ValueError):
    """A ring file that is not a valid mscope ring, or holds a malformed record."""


class RingClaimedError(MscopeError, RuntimeError):
    """Another live process is already draining this ring."""


class CaptureFormatError(MscopeError, ValueError):
    """A capture directory, manifest or chunk that cannot be read."""


class NativeBuildError(MscopeError, ImportError):
    """The compiled part of mscope is missing."""
