"""Loading the explorer's three pieces, each on its own, with the fix when one is missing.

A missing or mismatched piece is a :class:`Missing` value, not an exception, so the page can
say what to run and keep every part that does not need it working.
"""

from __future__ import annotations

import logging
import shlex
import tarfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

BUILD_SKINCLIP = "skinclip quickstart --data PATH_TO_DATA"


def build_index_command(folder: str, checkpoint: str, shards: str) -> str:
    """The command that builds the index at ``folder`` for the model the page loads."""
    parts = ["skinclip", "index", "build", "--shards", shards, "--checkpoint", checkpoint]
    return shlex.join([*parts, "--out", folder])


BUILD_SKINVL = (
    "skinvl train --config configs/skinvl_align.yaml && "
    "skinvl train --config configs/skinvl_instruct.yaml"
)


@dataclass(frozen=True)
class Missing:
    """A piece that could not be loaded: why, and the command that makes it."""

    what: str
    reason: str
    fix: str


def load_skinclip(checkpoint: str):
    """A SkinCLIP bundle from a Lightning checkpoint or an exported open_clip folder."""
    from skinclip.cli_common import first_line
    from skinclip.model.towers import create_skinclip

    path = Path(checkpoint)
    try:
        if path.is_dir():
            return create_skinclip(f"local-dir:{path}")
        if not path.is_file():
            raise FileNotFoundError(f"no SkinCLIP checkpoint at {path}")
        return create_skinclip(pretrained=str(path))
    except Exception as err:  # any unreadable file (safetensors, pickle, text) must not
        # take the whole page down: the other tabs keep working without the model
        return Missing(
            "SkinCLIP model", f"{path}: {first_line(err)}", f"{BUILD_SKINCLIP}, or --checkpoint"
        )


def load_index(folder: str, bundle, checkpoint: str, shards: str):
    """The case index, checked against the loaded model (from ``checkpoint``); a missing or
    mismatched one gets the command that builds it from ``shards`` for that model."""
    from skinclip.retrieval import load_case_index

    if isinstance(bundle, Missing):
        return Missing("case index", "it needs the SkinCLIP model, which is missing", bundle.fix)
    build = build_index_command(folder, checkpoint, shards)
    path = Path(folder)
    if not path.is_dir():
        return Missing("case index", f"no index folder at {path}", build)
    try:
        return load_case_index(path, bundle)
    except (FileNotFoundError, ValueError) as err:
        return Missing("case index", str(err), f"# rebuild it for this model:\n{build}")


def load_skinvl(checkpoint: str):
    """(SkinVL model, image size) from a ``skinvl train`` checkpoint."""
    from skinvl.cli import load_trained

    try:
        return load_trained(checkpoint)
    except (FileNotFoundError, ValueError) as err:
        return Missing("SkinVL", str(err), f"{BUILD_SKINVL}, or pass --skinvl")


class ShardImages:
    """Image bytes by sample key, read straight from the shard tars the index was built from.

    Only the tar headers are read up front; an image is one seek and one read.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._where: dict[str, tuple[Path, int, int]] = {}
        for tar_path in sorted(self.folder.rglob("*.tar")):
            try:
                with tarfile.open(tar_path) as tar:
                    for member in tar:
                        stem, _, ext = member.name.partition(".")
                        if ext == "jpg":
                            self._where[stem] = (tar_path, member.offset_data, member.size)
            except tarfile.TarError as err:
                logger.warning("Skipping unreadable shard %s: %s", tar_path, err)

    def __len__(self) -> int:
        return len(self._where)

    def get(self, key: str) -> bytes | None:
        """The JPEG of ``key``, or None when the shards do not hold it."""
        where = self._where.get(key)
        if where is None:
            return None
        path, offset, size = where
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(size)
