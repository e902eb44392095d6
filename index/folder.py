"""Replace a whole folder so that a crash leaves either the old contents or the new ones."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


def fsync_file(path: Path) -> None:
    """Flush a written file to disk, so a rename never publishes an empty or partial file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Makes the renames themselves durable; some filesystems refuse to fsync a directory.
    with contextlib.suppress(OSError):
        fsync_file(path)


@contextlib.contextmanager
def replace_folder(folder: Path, marker: str) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill, then swap it in for ``folder``.

    The new contents are written into ``.<name>.tmp-<id>`` next to ``folder``. Only when the
    block finishes is the old folder renamed aside and the new one renamed into place. If the
    block raises, the temporary folder is deleted and ``folder`` is untouched.

    Linux has no portable atomic exchange of two directories, so there is a window of two
    renames in which ``folder`` does not exist; an error in that window renames the old folder
    back. A hard kill inside it leaves the old contents in ``.<name>.old-<id>``.

    Args:
        folder: Destination folder. It may not exist yet.
        marker: A file name that an existing ``folder`` must contain (or be empty), so that a
            mistyped path never deletes an unrelated folder.

    Yields:
        The temporary folder to write into.

    Raises:
        ValueError: If ``folder`` exists and is not a directory, or is a non-empty directory
            without ``marker``.
    """
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise ValueError(f"{folder} exists and is not a folder; choose another output path.")
        if any(folder.iterdir()) and not (folder / marker).exists():
            raise ValueError(
                f"{folder} is a non-empty folder without {marker}, so it is not an index this "
                "code wrote. Refusing to replace it; choose an empty or new output path."
            )
    folder.parent.mkdir(parents=True, exist_ok=True)

    token = uuid.uuid4().hex[:8]
    tmp = folder.parent / f".{folder.name}.tmp-{token}"
    old = folder.parent / f".{folder.name}.old-{token}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    # Swap: move the old folder aside, publish the new one, then drop the old one.
    had_old = folder.exists()
    if had_old:
        os.rename(folder, old)
    try:
        os.rename(tmp, folder)
    except BaseException:
        if had_old:
            os.rename(old, folder)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(folder.parent)
    if had_old:
        shutil.rmtree(old, ignore_errors=True)
    logger.debug("Replaced %s (had previous contents: %s)", folder, had_old)
