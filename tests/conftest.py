"""Shared test fixtures: tiny synthetic images and the optional real-data root."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a tiny image under ``tmp_path``: ``make_image("a/b.jpg", fmt="JPEG")``."""

    def _make(
        name: str,
        fmt: str = "JPEG",
        size: tuple[int, int] = (24, 16),
        color: tuple[int, int, int] = (180, 90, 60),
        mode: str = "RGB",  # or "RGBA", half transparent
    ) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        img = Image.new(mode, size, color if mode == "RGB" else (*color, 128))
        # A gradient makes the JPEG non-trivial, so truncating it really cuts image data.
        for x in range(size[0]):
            img.putpixel((x, 0), (x * 10 % 256,) * len(mode))
        img.save(path, format=fmt)
        return path

    return _make


@pytest.fixture
def data_root() -> Path:
    """The real data folder from ``SKINCLIP_DATA``; tests using it skip when it is unset."""
    root = os.environ.get("SKINCLIP_DATA")
    if not root:
        pytest.skip("SKINCLIP_DATA is not set; real-data test skipped")
    path = Path(root)
    if not path.is_dir():
        pytest.fail(f"SKINCLIP_DATA={root} is not a folder")
    return path


ATLAS_HEADER = (
    "case_num,diagnosis,seven_point_score,pigment_network,streaks,pigmentation,"
    "regression_structures,dots_and_globules,blue_whitish_veil,vascular_structures,"
    "level_of_diagnostic_difficulty,elevation,location,sex,management,clinic,derm,case_id,notes"
)
ATLAS_ROWS = (
    "1,basal cell carcinoma,0,absent,absent,absent,absent,absent,absent,arborizing,medium,"
    "nodular,abdomen,female,excision,A/a1c.jpg,A/a1d.jpg,,",
    "2,melanoma (in situ),3,atypical,irregular,absent,absent,absent,present,absent,low,"
    "flat,head neck,male,excision,A/a2d.jpg,A/a2d.jpg,,Clinical missing and replaced with derm",
    "3,clark nevus,0,typical,absent,absent,absent,regular,absent,absent,low,"
    "palpable,lower limbs,female,clinical follow up,B/b3c.png,B/b3d.jpg,,",
)


@pytest.fixture
def tiny_atlas(make_image: Callable[..., Path], tmp_path: Path) -> Path:
    """A three-case derm7pt folder: case 2 has no clinical photo; split is 1 train/2 val/3 test."""
    root = tmp_path / "derm7pt"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "meta.csv").write_text("\n".join((ATLAS_HEADER, *ATLAS_ROWS)) + "\n")
    for stem, index in (("train", 0), ("valid", 1), ("test", 2)):
        (root / "meta" / f"{stem}_indexes.csv").write_text(f"indexes\n{index}\n")
    for name in ("A/a1c.jpg", "A/a1d.jpg", "A/a2d.jpg", "B/b3d.jpg"):
        make_image(f"derm7pt/images/{name}")
    make_image("derm7pt/images/B/b3c.png", fmt="PNG")
    return root


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards of 24 synthetic two-image cases (8 per split) over the four atlas groups."""
    return build_tiny_shards(tmp_path_factory.mktemp("tiny"), shard_size=5)


def build_tiny_shards(root: Path, shard_size: int) -> Path:
    """Write the ``tiny_shards`` cases under ``root``, ``shard_size`` samples per shard."""
    from skinclip.data.atlas import ATLAS_4CLASS
    from skinclip.data.records import ImageRecord
    from skinclip.data.shards import write_shards

    records = []
    for case in range(24):
        split = ("train", "val", "test")[case % 3]
        group = ATLAS_4CLASS[case % 4]
        for modality in ("dermoscopic", "clinical"):
            path = root / "images" / f"{case}_{modality}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            shade = (40 * (case % 4) + 30, 60 + case * 3, 200 - case * 5)
            image = Image.new("RGB", (40, 32), shade)
            if modality == "clinical":
                # A bright stripe keeps the two images of a case distinct (no tied scores).
                image.paste((250, 250, 250), (0, 0, 40, 8 + case % 8))
            image.save(path)
            caption = f"{modality} image of {group} on the back"
            meta = {
                "case_id": f"tiny-{case:02d}",
                "modality": modality,
                "diagnosis": group,
                "diagnosis_group": group,
                "location": "back",
                "sex": "female",
                "source": "tiny",
                "split": split,
            }
            key = f"tiny-{case:02d}_{modality}"
            records.append(ImageRecord(key, path, (caption, f"{group}, {modality}"), meta))
    write_shards(records, root / "shards", shard_size=shard_size, source_name="tiny")
    return root / "shards"


@pytest.fixture(scope="session")
def explorer_files(tiny_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What the case explorer loads, built small: a SkinCLIP export (64 px, untrained
    projections), a case index of the tiny shards made with it, and a SkinVL checkpoint
    trained for two steps."""
    from app.resources import load_skinclip
    from skinclip.model.towers import create_skinclip, export_open_clip
    from skinclip.retrieval import build_case_index
    from skinvl.cli import main as skinvl_main

    root = tmp_path_factory.mktemp("explorer")
    export = export_open_clip(create_skinclip(image_size=64), root / "skinclip")
    bundle = load_skinclip(str(export))  # the model id the explorer will see
    build_case_index(bundle, tiny_shards, num_workers=0).save(root / "index")
    args = ["train", "--model.stage", "instruct", "--model.projector", "linear"]
    args += ["--model.image_size", "64", "--model.total_steps", "2"]
    args += ["--data.shards", str(tiny_shards), "--data.batch_size", "4"]
    args += ["--data.num_workers", "0", "--trainer.max_steps", "2"]
    args += ["--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.default_root_dir", str(root / "skinvl")]
    assert skinvl_main(args) == 0
    return {
        "checkpoint": str(export),
        "index": str(root / "index"),
        "shards": str(tiny_shards),
        "skinvl": str(root / "skinvl" / "checkpoints" / "last.ckpt"),
    }
