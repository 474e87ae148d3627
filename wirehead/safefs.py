"""Files and directories of one user in places other users share (``/dev/shm``, ``$TMPDIR``), made safely.

On a shared node another local user can pre-create any name wirehead would use in a world-writable
directory: a directory (to fill with records wirehead trusts), a file (that wirehead then locks, reads or
cannot delete) or a symbolic link (that wirehead would follow and overwrite).  Everything wirehead keeps in
such places goes through this module:

* :func:`private_dir` makes (or finds) a directory and checks, after the fact, that it is a real directory
  (not a link) owned by this user and closed to others (mode 0700; a directory of this user with a wider
  mode is narrowed).  Anything else raises :class:`UnsafePath`, naming the owner.
* :func:`open_private` opens a file without following a link (``O_NOFOLLOW``) and checks, on the open
  descriptor, that it is a regular file of this user: what another user planted is refused, never used.
* :func:`write_private` replaces a file atomically with one created exclusively (``O_EXCL``) with mode 0600;
  :func:`read_private` reads one back after the same checks.

Scope: protects against other unprivileged users of the machine; root, and anyone who can act as this
user, are out of scope (see the README's Security section).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from typing import Union

__all__ = ["UnsafePath", "private_dir", "open_private", "write_private", "read_private", "is_mine"]

PathLike = Union[str, "os.PathLike[str]"]


class UnsafePath(PermissionError):
    """A path wirehead would use belongs to another user, is a link, or is not what it should be.

    A ``PermissionError`` (an ``OSError``): callers that fall back on an unusable directory or file do so
    for this one too, after a log line."""


def _owner(st: os.stat_result) -> str:
    try:
        import pwd

        return f"uid {st.st_uid} ({pwd.getpwuid(st.st_uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {st.st_uid}"


def is_mine(st: os.stat_result) -> bool:
    """Whether a stat result belongs to this process's (effective) user."""
    return st.st_uid == os.geteuid()


def private_dir(path: PathLike, *, create: bool = True) -> str:
    """Make (``create``) or find directory ``path``, closed to other users; return it as a string.

    Its parent must exist.  Raises:
        UnsafePath: ``path`` is a link, not a directory, or owned by another user (who made it first).
        OSError: it cannot be made (missing parent, no permission) or, with ``create=False``, is missing.
    """
    path = os.fspath(path)
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(f"{path} is a symbolic link, not a directory wirehead made: refusing it (remove it, or "
                         f"ask its owner, {_owner(st)}, to)")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{path} is not a directory: refusing it (remove it, or ask its owner, {_owner(st)}, to)")
    if not is_mine(st):
        raise UnsafePath(f"{path} belongs to {_owner(st)}, not to you (uid {os.geteuid()}): another user made it "
                         f"first; wirehead does not use it (ask its owner or an administrator to remove it)")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)  # ours, made with a wider mode (an older wirehead, a umask): close it
    return path


def open_private(path: PathLike, flags: int, mode: int = 0o600) -> int:
    """``os.open(path, flags | O_NOFOLLOW | O_CLOEXEC, mode)``, then check on the descriptor that it is a
    regular file of this user; return the descriptor.

    Raises:
        UnsafePath: a link, or a file that is not regular or belongs to another user (nothing was written).
        OSError: as :func:`os.open`.
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:  # the last component is a symbolic link
            raise UnsafePath(f"{path} is a symbolic link: refusing to follow it") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{path} is not a regular file: refusing it")
        if not is_mine(st):
            raise UnsafePath(f"{path} belongs to {_owner(st)}, not to you: refusing it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: PathLike, data: Union[str, bytes]) -> None:
    """Replace file ``path`` atomically with ``data``, readable and writable by this user only (0600).

    The new file is created exclusively next to it (a name no one can have planted) and renamed over it."""
    path = os.fspath(path)
    tmp = f"{path}.{secrets.token_hex(8)}.tmp"
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_private(path: PathLike) -> str:
    """The text of file ``path``, after :func:`open_private`'s checks (a link or another user's file is
    refused with :class:`UnsafePath`).  A file of this user readable by others is narrowed to 0600."""
    fd = open_private(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        if stat.S_IMODE(os.fstat(f.fileno()).st_mode) & 0o077:
            os.fchmod(f.fileno(), 0o600)
        return f.read().decode()
