"""Writing a capture's files: whole writes, and files replaced at once."""
import os
import tempfile

__all__ = ["write_all", "replace_whole"]


def write_all(fd, data):
    """Write all of `data` to `fd`."""
    # os.write on a regular file writes everything short of an error or a
    # > 2 GiB buffer; the loop covers the latter without a second frame.
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def replace_whole(path, data, mode, sync=True):
    """Make `data` the file `path` (a Path), mode `mode`: written aside in
    its directory, then renamed over it.  The rename is the commit: a
    reader sees the old file or the new, never part of one.  `sync`: the
    data reaches the disk before the rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, mode)
            write_all(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
