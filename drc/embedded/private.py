"""Directories and files of the embedded state and runtime that no other user can touch.

Root runs ``drc-embedded start`` and ``make demo`` at predictable paths (under /tmp), where any
user may create a name first, plant a symlink or swap a file. So a directory is used only when
it is created here, or already belongs to this user and nobody else can write to it; every
directory above it must belong to root or this user and be writable by nobody else, unless it is
sticky like /tmp (others may not rename or delete what they do not own there); and a symlink
on the way is followed only when root or this user made it. Inside such a directory nothing is
anyone else's, and files are still opened with ``O_NOFOLLOW``, so a mistake elsewhere cannot
turn a write into a write through a link.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def _trusted_owner(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def _who(uid: int) -> str:
    from drc.procfs import user_name

    return f"{user_name(uid)} (uid {uid})"


def _check_ancestors(path: Path) -> None:
    """Every directory above ``path`` (itself not included) is safe to hold a private one."""
    given = Path(os.path.abspath(path))
    for prefix in list(given.parents)[::-1]:  # from / down; a link only if root or we made it
        st = os.lstat(prefix)
        if stat.S_ISLNK(st.st_mode) and not _trusted_owner(st):
            raise RuntimeError(
                f"{prefix} is a symlink owned by {_who(st.st_uid)}: it could point "
                f"{given} anywhere; choose a path without it"
            )
    real = Path(os.path.realpath(given.parent))
    for parent in [*list(real.parents)[::-1], real]:
        st = os.stat(parent)
        open_to_others = st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX
        if not _trusted_owner(st) or open_to_others:
            raise RuntimeError(
                f"{parent} (mode {stat.S_IMODE(st.st_mode):o}, owner {_who(st.st_uid)}) lets "
                f"another user replace {given}: choose a directory only root or you can write"
            )


def private_dir(path: Path, mode: int = 0o700) -> Path:
    """``path`` as a directory of this user that no one else can write, set to ``mode``.

    Created (with its missing parents) when absent; an existing one must pass
    :func:`check_private`, or it is refused: another user may have made it first and put
    anything in it. Returns the resolved path.
    """
    path = Path(os.path.abspath(path))
    if not path.parent.exists():
        private_dir(path.parent, 0o755)
    try:
        _check_ancestors(path)
        os.mkdir(path, mode)
    except FileExistsError:
        check_private(path)
    os.chmod(path, mode)
    return Path(os.path.realpath(path))


def check_private(path: Path) -> Path:
    """An existing directory that only this user can change: a real directory (not a symlink),
    owned by this user, writable by nobody else, in safe ancestors. RuntimeError otherwise,
    FileNotFoundError when there is none. Returns the resolved path."""
    path = Path(os.path.abspath(path))
    _check_ancestors(path)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise RuntimeError(f"{path} is {kind}: remove it, or choose another path")
    if st.st_uid != os.geteuid():
        raise RuntimeError(
            f"{path} already exists and belongs to {_who(st.st_uid)}, not to you: anything "
            "in it may be theirs. Remove it, or choose another path"
        )
    if st.st_mode & 0o022:
        raise RuntimeError(
            f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):o}): anything "
            "in it may be planted. Remove it, or choose another path"
        )
    return Path(os.path.realpath(path))


def read_private(path: Path) -> str:
    """The text of ``path``, a regular file of this user, opened without following a link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    with os.fdopen(fd) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise RuntimeError(f"{path} is not a regular file of yours: not read")
        return f.read()


def open_private(path: Path, flags: int = os.O_APPEND, mode: int = 0o600) -> int:
    """A file descriptor for writing ``path``, never through a symlink, left at ``mode``."""
    fd = os.open(path, _WRITE_FLAGS | flags, mode)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, text: str, mode: int = 0o600) -> Path:
    """Replace ``path`` with ``text`` at ``mode`` atomically: a reader (or a crash) sees the old
    file or the new one, never half; a symlink at ``path`` is replaced, not followed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a leftover of a crash, whatever it is
    with os.fdopen(open_private(tmp, os.O_EXCL, mode), "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
