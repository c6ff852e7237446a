"""The exceptions mscope raises at its boundaries.

Each also subclasses the builtin a caller would expect, so
``except ValueError`` catches a malformed file as well as
``except MscopeError`` does.
"""
__all__ = ["MscopeError", "RingFormatError", "RingClaimedError",
           "CaptureFormatError", "FrameRejectedError", "CurveKeyError",
           "NativeBuildError", "ScenarioError", "PcapFormatError",
           "BinaryFormatError"]


class MscopeError(Exception):
    """Base of every mscope error."""


class RingFormatError(MscopeError, ValueError):
    """A ring file that is not a valid mscope ring, or holds a malformed record."""


class RingClaimedError(MscopeError, RuntimeError):
    """Another live process is already draining this ring."""


class CaptureFormatError(MscopeError, ValueError):
    """A capture directory, manifest or chunk that cannot be read."""


class FrameRejectedError(CaptureFormatError):
    """A received frame that a capture writer refuses to append.

    ``kind`` names the rule it broke, one of
    ``mscope.capture.writer.FRAME_REJECT_KINDS``, so a receiver can count
    rejections by kind.
    """

    def __init__(self, message, kind):
        super().__init__(message)
        self.kind = kind


class CurveKeyError(MscopeError, ValueError):
    """A CURVE certificate file that is missing, unreadable or of the wrong kind."""


class PcapFormatError(MscopeError, ValueError):
    """A pcap file to replay that is truncated, corrupt or not classic pcap."""


class NativeBuildError(MscopeError, ImportError):
    """The compiled part of mscope is missing."""


class ScenarioError(MscopeError, ValueError):
    """A scenario file (SCENARIO.md) that is unreadable or breaks a rule.

    The message is one line: the file (when loaded from one), where in it,
    and the rule, e.g. ``fw-bug.json: links[3]: unknown NF 'natt' (known:
    ...)``.
    """


class BinaryFormatError(MscopeError, ValueError):
    """A file given to ``mscope inspect`` that is not a readable ELF file."""
