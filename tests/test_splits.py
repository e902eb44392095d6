"""Split assignment: deterministic by case, right proportions, no case in two splits."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from skinclip.data.atlas import read_atlas
from skinclip.data.records import SPLITS
from skinclip.data.splits import hash_split


def test_hash_split_is_deterministic_within_a_process():
    ids = [f"case-{i}" for i in range(200)]
    first = [hash_split(i) for i in ids]
    assert first == [hash_split(i) for i in ids]
    assert set(first) <= set(SPLITS)


def test_hash_split_is_stable_across_processes_with_different_hash_seeds():
    code = (
        "from skinclip.data.splits import hash_split;"
        "print(','.join(hash_split(f'c{i}') for i in range(50)))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert outputs == {",".join(hash_split(f"c{i}") for i in range(50)) + "\n"}


@pytest.mark.parametrize("val,test", [(0.1, 0.1), (0.2, 0.05), (0.0, 0.3)])
def test_hash_split_proportions_match_fractions(val, test):
    counts = Counter(hash_split(f"derm-{i:05d}", val, test) for i in range(10_000))
    assert abs(counts["val"] / 10_000 - val) < 0.015
    assert abs(counts["test"] / 10_000 - test) < 0.015
    assert counts["train"] + counts["val"] + counts["test"] == 10_000


@pytest.mark.parametrize("val,test", [(-0.1, 0.1), (0.5, 0.5), (0.7, 0.4)])
def test_hash_split_rejects_bad_fractions(val, test):
    with pytest.raises(ValueError, match="val_fraction"):
        hash_split("x", val, test)


def _splits_by_case(records) -> dict[str, set[str]]:
    by_case = defaultdict(set)
    for record in records:
        by_case[record.meta["case_id"]].add(record.meta["split"])
    return by_case


def test_tiny_atlas_uses_official_split_and_keeps_cases_whole(tiny_atlas: Path):
    records = list(read_atlas(tiny_atlas))
    by_case = _splits_by_case(records)
    # "valid" in the file name maps to "val".
    assert by_case == {
        "derm7pt-0001": {"train"},
        "derm7pt-0002": {"val"},
        "derm7pt-0003": {"test"},
    }


def test_atlas_without_split_files_splits_by_case_hash(tiny_atlas: Path):
    for path in (tiny_atlas / "meta").glob("*_indexes.csv"):
        path.unlink()
    records = list(read_atlas(tiny_atlas))
    for case_id, splits in _splits_by_case(records).items():
        assert splits == {hash_split(case_id)}


def test_atlas_index_in_two_splits_is_rejected(tiny_atlas: Path):
    (tiny_atlas / "meta" / "test_indexes.csv").write_text("indexes\n2\n0\n")
    with pytest.raises(ValueError, match=r"test_indexes\.csv line 3: row 0 is already in split"):
        list(read_atlas(tiny_atlas))


def test_real_atlas_official_split_counts_and_no_case_across_splits(data_root: Path):
    records = list(read_atlas(data_root / "derm7pt"))
    by_case = _splits_by_case(records)
    assert all(len(splits) == 1 for splits in by_case.values())
    counts = Counter(next(iter(s)) for s in by_case.values())
    assert counts == {"train": 413, "val": 203, "test": 395}
    assert len(records) == 2013
