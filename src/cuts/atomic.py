"""Atomic file writing: a temp file in the destination's folder, then a rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``.

    If the body raises, the temporary file is removed and ``path`` is untouched, so
    a crash or a full disk never leaves a half-written file behind.

    Parameters
    ----------
    path : path-like
        Final destination.
    overwrite : bool
        If ``False`` and ``path`` exists, :class:`FileExistsError` is raised before writing.

    Raises
    ------
    IsADirectoryError
        ``path`` is an existing folder.
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    FileNotFoundError
        The folder that should hold ``path`` does not exist.
    """
    final = Path(path)
    if final.is_dir():
        raise IsADirectoryError(f"{final} is a folder; give a file name.")
    if not overwrite and final.exists():
        raise FileExistsError(f"{final} exists already; choose another name or allow overwriting.")
    folder = final.parent if str(final.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"the folder {folder} does not exist; create it first.")
    # keep the real suffix(es) so libraries that pick a format by extension still work
    suffix = "".join(final.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=suffix, dir=folder)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
