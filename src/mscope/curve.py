"""ZeroMQ CURVE keys for collector -> receiver shipping: load and apply them.

Both ends use ZeroMQ certificate files as ``zmq.auth.create_certificates``
writes them (``mscope keygen DIR NAME``): ``NAME.key`` holds the public key,
``NAME.key_secret`` the public and the secret key.  Keys are read from
files only, never from the command line, where ``ps`` would show them.

- The receiver (:func:`load_server`) loads its own secret certificate and a
  directory of the public certificates of the collectors it admits; a ZAP
  authenticator thread refuses every other client.
- A collector (:func:`load_client`) loads its own secret certificate and
  the receiver's public one.

Every failure is a :class:`~mscope.errors.CurveKeyError`, one line naming
the file and what is wrong with it.
"""
import os
import stat
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

from mscope.errors import CurveKeyError

__all__ = ["PUBLIC_SUFFIX", "SECRET_SUFFIX", "create_keys", "load_server",
           "load_client", "read_certificate", "allowed_client_keys"]

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
_Z85_KEY_LEN = 40          # a 32-byte CURVE key in Z85


def _check_key(path, what, key):
    if len(key) != _Z85_KEY_LEN:
        raise CurveKeyError(f"{path}: {what} is {len(key)} characters, a CURVE key "
                            f"has {_Z85_KEY_LEN}")
    try:
        z85.decode(key)
    except Exception:       # z85 raises KeyError or ValueError on bad text
        raise CurveKeyError(f"{path}: {what} is not Z85 text") from None


def read_certificate(path, secret: bool):
    """Read one certificate file; check it is the kind asked for.

    Parameters
    ----------
    path : str or os.PathLike
    secret : bool
        True: a secret certificate (``NAME.key_secret``), which must not be
        readable by group or others.  False: a public one (``NAME.key``);
        a secret certificate is refused, as handing it around defeats it.

    Returns
    -------
    public : bytes
    secret : bytes or None
        Z85 keys; `secret` None when a public certificate was asked for.

    Raises
    ------
    CurveKeyError
        Missing, unreadable, not a certificate, a key of the wrong length,
        the wrong kind, or a secret file open to others.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CurveKeyError(f"{path}: no such key file") from None
    except OSError as exc:
        raise CurveKeyError(f"{path}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CurveKeyError(f"{path}: not a regular file")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except ValueError:
        raise CurveKeyError(f"{path}: not a ZeroMQ certificate (no public-key; "
                            "make one with `mscope keygen`)") from None
    except OSError as exc:
        raise CurveKeyError(f"{path}: cannot read: {exc.strerror or exc}") from None
    _check_key(path, "public-key", public)
    if secret:
        if secret_key is None:
            raise CurveKeyError(f"{path}: a public certificate; this needs the secret "
                                f"one ({path.stem}{SECRET_SUFFIX})")
        _check_key(path, "secret-key", secret_key)
        if st.st_mode & 0o077:
            raise CurveKeyError(f"{path}: secret key is accessible to group or others "
                                f"(mode {stat.S_IMODE(st.st_mode):04o}; chmod 600 it)")
        return public, secret_key
    if secret_key is not None:
        raise CurveKeyError(f"{path}: a secret certificate; pass the public one "
                            f"({path.stem}{PUBLIC_SUFFIX}) and keep this one private")
    return public, None


def allowed_client_keys(allow_dir):
    """Public keys of every ``*.key`` certificate in `allow_dir`.

    Raises
    ------
    CurveKeyError
        Not a directory, a malformed certificate in it, or none at all (a
        receiver that admits nobody is a mistake, not a policy).
    """
    allow_dir = Path(allow_dir)
    if not allow_dir.is_dir():
        why = "not a directory" if allow_dir.exists() else "does not exist"
        raise CurveKeyError(f"{allow_dir}: {why} (expected a directory of client "
                            f"*{PUBLIC_SUFFIX} certificates)")
    try:
        files = sorted(allow_dir.glob(f"*{PUBLIC_SUFFIX}"))
    except OSError as exc:
        raise CurveKeyError(f"{allow_dir}: cannot list: {exc.strerror}") from None
    keys = set()
    for f in files:
        public, _ = read_certificate(f, secret=False)
        keys.add(public)
    if not keys:
        raise CurveKeyError(f"{allow_dir}: no client certificates (*{PUBLIC_SUFFIX}) "
                            "to allow")
    return keys


class _AllowList:
    """ZAP credentials provider: admit the keys of the allow directory, and
    tell `on_denied` about every other (runs in the authenticator thread)."""

    def __init__(self, keys, on_denied=None):
        self.keys = frozenset(keys)
        self.on_denied = on_denied

    def callback(self, domain, z85_client_key):
        if z85_client_key in self.keys:
            return True
        if self.on_denied is not None:
            self.on_denied(z85_client_key.decode("ascii", "replace"))
        return False


def load_server(socket, secret_file, allow_dir, on_denied=None):
    """Make `socket` a CURVE server admitting only the clients in `allow_dir`.

    Call before ``bind``: until the authenticator runs, libzmq would let any
    CURVE client in.

    Parameters
    ----------
    socket : zmq.Socket
        Not yet bound.
    secret_file : str or os.PathLike
        This server's secret certificate.
    allow_dir : str or os.PathLike
        Directory of the public certificates (``*.key``) of allowed clients.
        Read once: restart to admit a new collector.
    on_denied : callable, optional
        Called with the Z85 public key of each refused client, from the
        authenticator thread.

    Returns
    -------
    zmq.auth.thread.ThreadAuthenticator
        Running; ``stop()`` it after closing the socket.

    Raises
    ------
    CurveKeyError
        A file or the directory is missing, unreadable or of the wrong kind.
    """
    from zmq.auth.thread import ThreadAuthenticator
    public, secret = read_certificate(secret_file, secret=True)
    keys = allowed_client_keys(allow_dir)
    auth = ThreadAuthenticator(socket.context)
    auth.start()
    auth.configure_curve_callback("*", credentials_provider=_AllowList(keys, on_denied))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    return auth


def load_client(socket, secret_file, server_public_file):
    """Make `socket` a CURVE client of the server whose public key is given.

    Call before ``connect``.

    Parameters
    ----------
    socket : zmq.Socket
    secret_file : str or os.PathLike
        This client's secret certificate; its public half must be in the
        receiver's ``--curve-allow`` directory.
    server_public_file : str or os.PathLike
        The receiver's public certificate (``NAME.key``).

    Raises
    ------
    CurveKeyError
        A file is missing, unreadable or of the wrong kind.
    """
    public, secret = read_certificate(secret_file, secret=True)
    server_public, _ = read_certificate(server_public_file, secret=False)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = server_public


def create_keys(key_dir, name):
    """Write a new key pair: ``NAME.key`` (0644) and ``NAME.key_secret`` (0600).

    `key_dir` is created with mode 0700 if missing (an existing directory
    keeps its mode).  The secret file is never readable by others, not even
    for a moment: it is written under a 0077 umask.

    Returns
    -------
    public_file, secret_file : pathlib.Path

    Raises
    ------
    CurveKeyError
        `name` is not a plain file name, or a key of that name exists
        (keys are never overwritten).
    OSError
        The directory cannot be created or written.
    """
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise CurveKeyError(f"name: {name!r} is not a plain file name")
    key_dir = Path(key_dir)
    if not key_dir.exists():
        key_dir.mkdir(mode=0o700, parents=True)
        os.chmod(key_dir, 0o700)            # mkdir's mode is filtered by the umask
    elif not key_dir.is_dir():
        raise CurveKeyError(f"{key_dir}: exists and is not a directory")
    public_file = key_dir / f"{name}{PUBLIC_SUFFIX}"
    secret_file = key_dir / f"{name}{SECRET_SUFFIX}"
    for f in (public_file, secret_file):
        if os.path.lexists(f):
            raise CurveKeyError(f"{f}: exists; refusing to overwrite a key")
    old = os.umask(0o077)
    try:
        zmq.auth.create_certificates(key_dir, name)
    finally:
        os.umask(old)
    os.chmod(secret_file, 0o600)
    os.chmod(public_file, 0o644)
    return public_file, secret_file
