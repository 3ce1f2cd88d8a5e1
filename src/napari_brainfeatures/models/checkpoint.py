"""Self-describing model files: safetensors weights with a JSON header.

A model file is one ``.safetensors`` file.  Its metadata holds ``kind`` (which
network), ``config`` (the architecture as JSON) and ``meta`` (classes, patch
size, normalisation, voxel size, training record...).  Loading reads tensors
and JSON only; nothing in the file is executed.  Writes are atomic (temporary
file, then rename), so a crash never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from napari_brainfeatures._util.device import resolve_device
from napari_brainfeatures._util.files import as_if_created
from napari_brainfeatures._util.leftovers import clean_leftovers, temp_path
from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.models.schema import check_tensor_table, count_on_meta

__all__ = [
    "ModelFileError",
    "ModelMismatchError",
    "check_expected",
    "check_image_dtype",
    "check_save_path",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "read_header",
]

FORMAT = "napari-brainfeatures/1"
#: Largest safetensors header read (the JSON before the weights).
MAX_HEADER_BYTES = 16 * 2**20


class ModelFileError(ValueError):
    """A model file is missing, truncated, not safetensors, or of another architecture."""


class ModelMismatchError(ModelFileError):
    """A valid model file that was trained for other classes or another patch size."""


M = TypeVar("M", bound=nn.Module)


def model_path(path: str | os.PathLike[str]) -> Path:
    """The file :func:`save_checkpoint` writes for ``path`` (``.safetensors`` appended)."""
    path = Path(path)
    return path if path.suffix == ".safetensors" else path.with_name(path.name + ".safetensors")


def check_save_path(path: str | os.PathLike[str], kind: str) -> Path:
    """The file a ``kind`` model would be saved to, if writing it loses no other work.

    An existing file is replaced only when it is a model of the same kind (saving
    again); a folder, a file that is not a model file and a model of another kind
    (a trained CNN when saving a VAE) are refused.

    Raises
    ------
    ModelFileError
    """
    p = model_path(path)
    if p.is_dir():
        raise ModelFileError(f"{str(p)!r} is a folder; choose a file name for the model")
    if p.exists():
        try:
            found = read_header(p)["kind"]
        except ModelFileError:
            raise ModelFileError(
                f"{str(p)!r} exists and is not a model file; it is not replaced: choose "
                "another file name"
            ) from None
        if found != kind:
            raise ModelFileError(
                f"{str(p)!r} holds a {found} model; it is not replaced by a {kind}: choose "
                "another file name"
            )
    return p


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    kind: str,
    config: dict[str, Any],
    meta: dict[str, Any] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``model``'s weights and description atomically to ``path``.

    Parameters
    ----------
    path : path-like
        Target file; ``.safetensors`` is appended when missing.
    model : nn.Module
    kind : str
        Network name, e.g. ``"BrainAreaCNN"``; checked on load.
    config : dict
        JSON-ready architecture config that rebuilds the network.
    meta : dict, optional
        JSON-ready extra description (classes, normalisation, training record).
    overwrite : bool
        If False, refuse to replace an existing file.

    Returns
    -------
    Path
        The file written.
    """
    path = model_path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"model file {str(path)!r} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {
        "format": FORMAT,
        "kind": kind,
        "config": json.dumps(config),
        "meta": json.dumps(meta or {}),
    }
    clean_leftovers(path)  # what a killed earlier save of this file left beside it
    tmp = temp_path(path, "tmp")
    try:
        save_file(tensors, str(tmp), metadata=header)
        as_if_created(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _read_raw(path: str | os.PathLike[str]) -> tuple[dict[str, Any], int]:
    """The parsed safetensors header of ``path`` and the size of its data section."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {str(path)!r} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{str(path)!r} is not a safetensors model file (too short)")
        n = int.from_bytes(head, "little")
        if n <= 0 or n > MAX_HEADER_BYTES or n + 8 > size:
            raise ModelFileError(
                f"{str(path)!r} is not a safetensors model file or is truncated "
                "(a pickled PyTorch .pt/.pth file cannot be loaded: it could run code)"
            )
        try:
            raw = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError, RecursionError):  # JSONDecodeError is one
            raise ModelFileError(f"{str(path)!r} has a corrupt safetensors header") from None
    if not isinstance(raw, dict):
        raise ModelFileError(
            f"{str(path)!r} has a corrupt safetensors header (a JSON {type(raw).__name__}, "
            "not an object)"
        )
    return raw, size - 8 - n


def _json_field(path: Path, md: dict[str, Any], key: str, default: str | None) -> dict:
    """``md[key]``: a string holding a JSON object, parsed (``default`` when missing)."""
    text = md.get(key, default)
    if not isinstance(text, str):
        raise ModelFileError(
            f"{str(path)!r} has an invalid model description: {key!r} must be a JSON string, "
            f"got {type(text).__name__}"
        )
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise ModelFileError(
            f"{str(path)!r} has an invalid model description: {key!r} is not valid JSON"
        ) from None
    if not isinstance(value, dict):
        raise ModelFileError(
            f"{str(path)!r} has an invalid model description: {key!r} must hold a JSON "
            f"object, got a {type(value).__name__}"
        )
    return value


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a model file's description without loading its weights.

    Only JSON is parsed: nothing in the file is executed.

    Returns
    -------
    dict
        ``{"kind": str, "config": dict, "meta": dict}``.

    Raises
    ------
    ModelFileError
        Missing, truncated or not a model file, or a description of the wrong types.
    """
    path = Path(path)
    raw, _ = _read_raw(path)
    md = raw.get("__metadata__")
    if md is None:
        md = {}
    if not isinstance(md, dict):
        raise ModelFileError(
            f"{str(path)!r} has a corrupt safetensors header ('__metadata__' is a "
            f"{type(md).__name__}, not an object)"
        )
    if md.get("format") != FORMAT:
        raise ModelFileError(
            f"{str(path)!r} is a safetensors file but not a napari-brainfeatures model "
            f"(format {str(md.get('format'))[:40]!r})"
        )
    kind = md.get("kind")
    if not isinstance(kind, str) or not 0 < len(kind) <= 100:
        raise ModelFileError(
            f"{str(path)!r} has an incomplete model description: 'kind' must be a network "
            f"name, got {str(kind)[:40]!r}"
        )
    if "config" not in md:
        raise ModelFileError(f"{str(path)!r} has an incomplete model description: no 'config'")
    return {
        "kind": kind,
        "config": _json_field(path, md, "config", None),
        "meta": _json_field(path, md, "meta", "{}"),
    }


def load_checkpoint(path: str | os.PathLike[str], model: nn.Module, *, kind: str) -> dict[str, Any]:
    """Load weights from ``path`` into ``model`` (built from :func:`read_header`).

    The file's tensor table (names, dtypes, shapes, byte ranges) is checked
    against ``model`` before any weight is read.

    Raises
    ------
    ModelFileError
        If the file is of another kind, truncated, or its tensors do not match.
    """
    header = read_header(path)
    if header["kind"] != kind:
        raise ModelFileError(f"{str(path)!r} holds a {header['kind']!r}, expected a {kind!r}")
    _check_tensors(path, model, kind)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(f"{str(path)!r} is corrupt or truncated: {err}") from None
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as err:  # shape mismatch
        raise ModelFileError(
            f"{str(path)!r} does not match the {kind} architecture: {err}"
        ) from None
    if missing or unexpected:
        raise ModelFileError(
            f"{str(path)!r} does not match the {kind} architecture "
            f"(missing {missing!r}, unexpected {unexpected!r})"
        )
    return header


def _check_tensors(path: str | os.PathLike[str], model: nn.Module, kind: str) -> None:
    raw, data_size = _read_raw(path)
    try:
        check_tensor_table(raw, data_size, model.state_dict())
    except ValueError as err:
        raise ModelFileError(
            f"{str(path)!r} does not match the {kind} architecture: {err}"
        ) from None


def load_model(
    path: str | os.PathLike[str],
    *,
    kind: str,
    config_cls: Any,
    build: Callable[[Any], M],
    check: Callable[[Any, dict[str, Any]], None] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[M, dict[str, Any]]:
    """Rebuild a ``kind`` network from its file: config from the header, then the weights.

    ``config_cls.from_dict`` reads the architecture (an error there is an
    "invalid <name> config", ``<name>`` the class name without ``Config``);
    ``check(config, meta)`` may refuse the model (or add to ``meta``) before any
    weight is read; the network is then counted on the ``meta`` device against
    :data:`~.schema.MAX_PARAMETERS` and compared with the file's tensor table,
    and only then ``build(config)`` makes the network the weights load into.

    Returns
    -------
    model, meta
        The model in eval mode on ``device`` and the file's description.
    """
    header = read_header(path)
    if header["kind"] != kind:
        raise ModelFileError(f"{str(path)!r} holds a {header['kind']!r}, expected a {kind!r}")
    name = config_cls.__name__.removesuffix("Config")
    try:
        config = config_cls.from_dict(header["config"])
        probe = count_on_meta(build, config, name)
    except (TypeError, ValueError, OverflowError, RuntimeError) as err:
        raise ModelFileError(f"{str(path)!r} has an invalid {name} config: {err}") from None
    meta = dict(header["meta"])
    if check is not None:
        check(config, meta)
    _check_tensors(path, probe, kind)
    model = build(config)
    load_checkpoint(path, model, kind=kind)
    return model.to(device).eval(), meta


def check_expected(
    path: Any,
    table: ClassTable,
    patch_size: int,
    *,
    expect_classes: ClassTable | list[str] | None = None,
    expect_patch_size: int | None = None,
) -> None:
    """Refuse a model file (its class ``table`` and ``patch_size``) that does not fit.

    ``expect_classes`` is compared by id and name for a table, by name for a
    list; order matters: it is the output order.

    Raises
    ------
    ModelMismatchError
    """
    if expect_patch_size is not None and int(expect_patch_size) != patch_size:
        raise ModelMismatchError(
            f"{str(path)!r} was trained on {patch_size} px patches, not {expect_patch_size} px; "
            "retrain with this patch size or choose the matching model"
        )
    if expect_classes is None:
        return
    want: list[Any]
    have: list[Any]
    if isinstance(expect_classes, ClassTable):
        want = [(c.id, c.name) for c in expect_classes]
        have = [(c.id, c.name) for c in table]
    else:
        want, have = [str(n) for n in expect_classes], table.names
    if want != have:
        raise ModelMismatchError(
            f"{str(path)!r} was trained for classes {have!r}, not {want!r}; "
            "retrain for these classes or choose the matching model"
        )


def check_image_dtype(meta: dict[str, Any], dtype: Any) -> None:
    """Refuse images of another dtype than the model was trained on.

    A model reads its input divided by the training dtype's maximum
    (``meta["normalisation"]``, e.g. ``"uint16/65535"``); the same pixels stored
    as another dtype reach it on another scale and give confident nonsense.
    Float images go with a float-trained model whatever their precision.
    Only models whose training recorded its input (``meta["input_scale"]``,
    written by :func:`~napari_brainfeatures.train.fit.train_cnn`) are checked: a
    bare saved network's ``"uint8/255"`` is a default, not a fact.

    Raises
    ------
    ModelMismatchError
    """
    norm = meta.get("normalisation")
    if not isinstance(norm, str) or "input_scale" not in meta:
        return
    dt = np.dtype(dtype)
    trained = "float" if norm.startswith("float") else norm.split("/")[0]
    if trained == ("float" if dt.kind == "f" else dt.name):
        return
    raise ModelMismatchError(
        f"the model was trained on {trained} images (input {norm}) but this image is "
        f"{dt.name}: its intensities would reach the network on another scale. Use the image "
        f"as {trained} (as it was for training), or train a model on this data"
    )


def device_of(name: str | torch.device | None = None) -> torch.device:
    """``cuda`` when available (or asked for), else ``cpu`` (see :func:`resolve_device`)."""
    return resolve_device(name)
