"""Write image records into webdataset shards, one folder of shards per split, plus a manifest.

Layout written under ``out_dir``::

    manifest.json
    train/shard-000000.tar  train/shard-000001.tar ...
    val/shard-000000.tar ...
    test/shard-000000.tar ...

Each sample holds ``__key__``, ``jpg`` (image bytes), ``txt`` (``captions[0]``) and ``json``
(the record's meta plus ``captions``, the list of every phrasing).
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import webdataset as wds
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError
from tqdm import tqdm

from skinclip.data.images import to_rgb
from skinclip.data.records import SPLITS, ImageRecord, normalize_split, safe_key
from skinclip.data.splits import hash_split

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
SHARD_PATTERN = "shard-%06d.tar"
MANIFEST_FORMAT = "skinclip-shards/1"
JPEG_QUALITY = 95


class SkipSample(Exception):
    """Raised for a sample that cannot be written; ``reason`` goes into the manifest."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@contextmanager
def _strict_decoding() -> Iterator[None]:
    # With LOAD_TRUNCATED_IMAGES on (some training code sets it), PIL pads truncated files
    # with grey instead of raising, and a broken image would be written as if it were whole.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _to_jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    to_rgb(img).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def image_jpeg_bytes(path: Path) -> bytes:
    """Decode an image fully and return JPEG bytes for it.

    The original bytes are kept when the content is already an RGB or greyscale JPEG (checked by
    decoding, not by the file suffix); anything else is re-encoded as RGB JPEG, quality 95.

    Args:
        path: Image file.

    Returns:
        JPEG bytes.

    Raises:
        SkipSample: With reason ``missing file``, ``not an image``, ``truncated image`` or
            ``unreadable image``.
    """
    try:
        data = Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise SkipSample("missing file") from None
    except OSError as err:
        raise SkipSample("unreadable image", str(err)) from None
    try:
        with _strict_decoding(), Image.open(io.BytesIO(data)) as img:
            img.load()
            # Kept byte for byte only when no conversion is needed: an EXIF rotation would be
            # lost to readers that ignore EXIF.
            if img.format == "JPEG" and img.mode in ("RGB", "L") and not _rotated(img):
                return data
            return _to_jpeg(img)
    except UnidentifiedImageError:
        raise SkipSample("not an image", "the content is no image format PIL knows") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = "truncated image" if "truncated" in str(err).lower() else "unreadable image"
        raise SkipSample(reason, str(err)) from None


def _rotated(img: Image.Image) -> bool:
    return img.getexif().get(ExifTags.Base.Orientation, 1) != 1


class _SplitWriter:
    """Rolls over shards of one split; each shard is renamed from ``.tmp`` once it is complete."""

    def __init__(self, folder: Path, shard_size: int, mtime: float) -> None:
        self.folder = folder
        self.shard_size = shard_size
        self.mtime = mtime
        self.names: list[str] = []
        self._file = None
        self._tar = None
        self._count = 0

    def write(self, sample: dict) -> None:
        if self._tar is None or self._count >= self.shard_size:
            self.close()
            self.folder.mkdir(parents=True, exist_ok=True)
            name = SHARD_PATTERN % len(self.names)
            self._file = open(self.folder / f"{name}.tmp", "wb")  # noqa: SIM115
            self._tar = wds.TarWriter(self._file, mtime=self.mtime, format="PAX_FORMAT")
            self.names.append(name)
            self._count = 0
        self._tar.write(sample)
        self._count += 1

    def close(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        name = self.names[-1]
        os.replace(self.folder / f"{name}.tmp", self.folder / name)
        self._tar = self._file = None


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write JSON to a temp file in the same folder, then rename it over ``path``."""
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False))


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    """One JSON object per line, written like :func:`write_json_atomic`."""
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file in the same folder, then rename it over ``path``: a
    reader sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the manifest is meant to be shared.
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sample(record: ImageRecord, jpeg: bytes, captions: list[str], split: str) -> dict:
    meta = {**record.meta, "split": split, "captions": captions}
    text = json.dumps(meta, ensure_ascii=False, default=str)
    return {"__key__": record.key, "jpg": jpeg, "txt": captions[0], "json": text.encode("utf-8")}


def _publish(staging: Path, out_dir: Path, writers: dict[str, _SplitWriter]) -> None:
    """Replace the previous run's shards with the staged ones."""
    # Without a manifest the folder reads as "not written yet", never as a mix of two runs.
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    removed = 0
    for split in SPLITS:
        folder = out_dir / split
        for old in [*folder.glob("shard-*.tar"), *folder.glob("shard-*.tar.tmp")]:
            old.unlink()
            removed += 1
        if split in writers:
            folder.mkdir(parents=True, exist_ok=True)
            for name in writers[split].names:
                os.replace(staging / split / name, folder / name)
    if removed:
        logger.info("Replaced %d shard files of a previous run in %s", removed, out_dir)


def write_shards(
    records: Iterable[ImageRecord],
    out_dir: Path,
    shard_size: int = 1000,
    source_name: str = "unnamed",
    max_skip_warnings: int = 20,
    progress: bool = False,
) -> dict:
    """Validate and write records as webdataset shards in one pass, then write the manifest.

    Every image is fully decoded first; missing, truncated or non-image files and records
    without a caption are skipped and listed in the manifest with their reason. Shards are
    staged and only replace a previous run's shards once all are complete.

    Args:
        records: Records to write; iterated once.
        out_dir: Output folder; gets ``<split>/shard-%06d.tar`` and ``manifest.json``.
        shard_size: Maximum samples per shard.
        source_name: Name of the data source, stored in the manifest.
        max_skip_warnings: Skips logged one by one before the rest are only counted.
        progress: Show a progress bar.

    Returns:
        The manifest dict (also written to ``out_dir/manifest.json``).
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1; got {shard_size}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    created = datetime.now(timezone.utc)
    for stale in out_dir.glob(".staging-*"):
        # Left by a run that was killed before it could clean up; never published.
        logger.info("Removing %s left by an interrupted run", stale)
        shutil.rmtree(stale, ignore_errors=True)
    staging = out_dir / f".staging-{uuid.uuid4().hex[:8]}"
    writers: dict[str, _SplitWriter] = {}
    by_split_modality: Counter = Counter()
    skipped: list[dict] = []
    seen_keys: set[str] = set()
    num_captions = 0

    try:
        for record in tqdm(records, desc="shards", unit="img", disable=not progress):
            try:
                if not record.key or record.key != safe_key(record.key):
                    # webdataset splits keys at dots, so such a sample would be read back wrong.
                    raise SkipSample("invalid key", "use records.safe_key to build keys")
                captions = [c.strip() for c in record.captions if c and c.strip()]
                if not captions:
                    raise SkipSample("empty caption")
                jpeg = image_jpeg_bytes(record.image_path)
                if record.key in seen_keys:
                    raise SkipSample(
                        "duplicate key",
                        "an earlier record has this key: is the image listed twice?",
                    )
            except SkipSample as skip:
                skipped.append(
                    {"key": record.key, "file": str(record.image_path), "reason": skip.reason}
                )
                if len(skipped) <= max_skip_warnings:
                    logger.warning(
                        "Skipping %s (%s): %s %s",
                        record.key,
                        record.image_path,
                        skip.reason,
                        skip.detail,
                    )
                continue
            seen_keys.add(record.key)
            split = normalize_split(record.meta.get("split"))
            split = split or hash_split(record.meta.get("case_id") or record.key)
            if split not in writers:
                writers[split] = _SplitWriter(staging / split, shard_size, created.timestamp())
            writers[split].write(_sample(record, jpeg, captions, split))
            by_split_modality[split, record.meta.get("modality") or "unknown"] += 1
            num_captions += len(captions)
        for writer in writers.values():
            writer.close()
        if not by_split_modality:
            raise ValueError(_nothing_written(skipped, out_dir))
        _publish(staging, out_dir, writers)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    if len(skipped) > max_skip_warnings:
        logger.warning(
            "Skipped %d more samples without a warning each; see %s for the full list",
            len(skipped) - max_skip_warnings,
            out_dir / MANIFEST_NAME,
        )
    manifest = _manifest(
        source_name, created, shard_size, writers, by_split_modality, skipped, num_captions
    )
    write_json_atomic(out_dir / MANIFEST_NAME, manifest)
    logger.info(
        "Wrote %d samples (%d skipped) to %s",
        manifest["total_samples"],
        len(skipped),
        out_dir,
    )
    return manifest


def _nothing_written(skipped: list[dict], out_dir: Path) -> str:
    reasons = Counter(s["reason"] for s in skipped)
    examples = ", ".join(s["file"] for s in skipped[:3])
    return (
        f"No sample could be written ({len(skipped)} skipped: "
        f"{', '.join(f'{n} {r}' for r, n in reasons.most_common())}; e.g. {examples}). "
        f"Check --image-root and the caption column. Nothing in {out_dir} was changed."
    )


def _manifest(
    source_name: str,
    created: datetime,
    shard_size: int,
    writers: dict[str, _SplitWriter],
    by_split_modality: Counter,
    skipped: list[dict],
    num_captions: int,
) -> dict:
    split_counts = Counter()
    modality_counts = Counter()
    nested: dict[str, dict[str, int]] = {}
    order = {s: i for i, s in enumerate(SPLITS)}
    for (split, modality), n in sorted(
        by_split_modality.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])
    ):
        split_counts[split] += n
        modality_counts[modality] += n
        nested.setdefault(split, {})[modality] = n
    return {
        "format": MANIFEST_FORMAT,
        "source": source_name,
        "created": created.isoformat(timespec="seconds"),
        "shard_size": shard_size,
        "total_samples": sum(split_counts.values()),
        "total_captions": num_captions,
        "splits": {
            split: {
                "samples": split_counts.get(split, 0),
                "num_shards": len(writers[split].names) if split in writers else 0,
                "shards": [f"{split}/{n}" for n in writers[split].names]
                if split in writers
                else [],
            }
            for split in SPLITS
        },
        "counts": {
            "split": dict(split_counts),
            "modality": dict(modality_counts),
            "split_modality": nested,
        },
        "skipped_count": len(skipped),
        "skipped_by_reason": dict(Counter(s["reason"] for s in skipped)),
        "skipped": skipped,
    }


def read_manifest(out_dir: Path) -> dict:
    """Read the manifest written by ``write_shards``.

    Args:
        out_dir: The shard folder.

    Returns:
        The manifest dict.

    Raises:
        FileNotFoundError: If there is no manifest (no complete shard set) in ``out_dir``.
    """
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        inner = Path(out_dir) / "shards"  # a quickstart output folder holds them one level down
        if (inner / MANIFEST_NAME).is_file():
            raise FileNotFoundError(f"No {MANIFEST_NAME} in {out_dir}; did you mean {inner}?")
        raise FileNotFoundError(
            f"No {MANIFEST_NAME} in {out_dir}, so it holds no complete shard set; "
            "run `skinclip shards` first to write shards there."
        )
    return json.loads(path.read_text(encoding="utf-8"))


def shard_paths(out_dir: Path, split: str) -> list[Path]:
    """List the shard files of one split, as recorded in the manifest.

    Args:
        out_dir: The shard folder.
        split: One of ``SPLITS``.

    Returns:
        Absolute shard paths, in order; empty when the split has no samples.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose one of {list(SPLITS)}.")
    manifest = read_manifest(out_dir)
    # A manifest from other tools (or edited by hand) may leave an empty split out.
    names = manifest.get("splits", {}).get(split, {}).get("shards", [])
    return [Path(out_dir).resolve() / name for name in names]


def every_shard(urls: Iterable[str]) -> Iterator[str]:
    """A webdataset ``nodesplitter`` that gives every process all shards, for data that each
    process must see whole (webdataset's default refuses to run under DDP)."""
    yield from urls


def split_urls(out_dir: Path, split: str) -> list[str]:
    """Shard paths of one split as strings for webdataset, or a clear error when there are none.

    Raises:
        FileNotFoundError: If the folder has no manifest or the split has no shards.
    """
    paths = shard_paths(out_dir, split)
    if not paths:
        raise FileNotFoundError(
            f"No '{split}' shards under {Path(out_dir) / split}. Run `skinclip shards` on data "
            "that has this split."
        )
    return [str(p) for p in paths]
