"""What the explorer loads: from command-line arguments, over a YAML file, over defaults.

The defaults are where ``skinclip quickstart`` and the SkinVL configs write their outputs, so a
user who ran them needs no arguments at all.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from app.inputs import DEFAULT_MAX_UPLOAD_MB
from skinclip.cli_common import StrictParser


@dataclass(frozen=True)
class AppConfig:
    """Attributes:
    checkpoint: SkinCLIP Lightning checkpoint, or an exported open_clip folder.
    index: Case index folder written by ``skinclip index build``.
    shards: Shard folder the index was built from; it holds the case images.
    skinvl: SkinVL checkpoint written by ``skinvl train``.
    max_upload_mb: Largest upload accepted.
    """

    checkpoint: str = "outputs/quickstart/train/checkpoints/last.ckpt"
    index: str = "outputs/quickstart/index"
    shards: str = "outputs/quickstart/shards"
    skinvl: str = "outputs/skinvl/instruct/checkpoints/last.ckpt"
    max_upload_mb: float = float(DEFAULT_MAX_UPLOAD_MB)


def parse_config(argv: list[str]) -> AppConfig:
    """Read ``--config FILE`` (YAML with the fields of :class:`AppConfig`) and overrides.

    Raises:
        FileNotFoundError: If the config file does not exist.
        ValueError: If it is not a mapping of known fields.
    """
    parser = StrictParser(prog="skinclip app")
    parser.add_argument("--config", help="YAML file with checkpoint, index, shards, skinvl")
    for f in fields(AppConfig):
        kind = float if isinstance(f.default, float) else str
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind)
    args = parser.parse_args(argv)
    values: dict = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"App config not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not readable YAML ({err}).") from None
        known = {f.name for f in fields(AppConfig)}
        unknown = sorted(set(data) - known) if isinstance(data, dict) else [repr(data)]
        if unknown:
            raise ValueError(
                f"{path} must map some of {', '.join(sorted(known))} to values; "
                f"unknown: {', '.join(map(str, unknown))}."
            )
        values.update(data)
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    limit = values.get("max_upload_mb", AppConfig.max_upload_mb)
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 < limit < 1e6:
        raise ValueError(
            f"max_upload_mb must be a positive number of megabytes, below a million; got {limit!r}."
        )
    for name in ("checkpoint", "index", "shards", "skinvl"):
        if name in values and not isinstance(values[name], str):
            raise ValueError(f"{name} must be a path; got {values[name]!r}.")
    return AppConfig(**values)
