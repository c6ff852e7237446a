"""One writer per capture directory: an flock on the directory itself."""
import errno
import fcntl
import os

__all__ = ["lock_capture"]


def lock_capture(path) -> int:
    """Take capture directory `path`'s flock: one writer per capture.  The
    kernel drops it when the process dies, so a killed writer never leaves
    a stale lock behind.  Returns the fd that holds it (close it to let go).

    Raises
    ------
    FileExistsError
        Another writer has the capture open.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise FileExistsError(f"{path}: another writer has this capture open") from None
        raise
    return fd
