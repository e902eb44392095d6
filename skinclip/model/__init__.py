"""Model construction: towers, weight loading and export."""

from skinclip.model.towers import (
    DEFAULT_MODEL,
    SkinCLIPBundle,
    create_skinclip,
    export_open_clip,
    load_efficientnet_lite0,
)

__all__ = [
    "DEFAULT_MODEL",
    "SkinCLIPBundle",
    "create_skinclip",
    "export_open_clip",
    "load_efficientnet_lite0",
]
