"""The CNN shipped for the micro-CT sample: its file, its record, installing and loading it.

``sample_cnn.safetensors`` is the default network trained with the full recipe
(:data:`~napari_brainfeatures.train.recipe.DEFAULTS`, 128 px patches, seed 0) on
the sample of :func:`~napari_brainfeatures.synthetic.make_microct` (its default
shape and seed 0), stored in float16 to halve the file.  ``sample_cnn.json`` is
its record: held-out test accuracy, macro-F1, chance level, recipe, sample
generator version, date, machine and the file's sha256
(``scripts/build_sample_model.py`` writes both).

:func:`install_sample_model` writes the model as an ordinary float32 model file
(the one :func:`~napari_brainfeatures.models.cnn.load_cnn` reads) into a folder,
e.g. a workspace's ``models``; :func:`load_sample_model` loads it.
:func:`sample_training_splits` samples the patches such a model is trained on.  Nothing in
either file is executed: weights are safetensors, the record is JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "MODEL_FILE",
    "RECORD_FILE",
    "WEIGHTS_DIR",
    "check_sample_model",
    "install_sample_model",
    "load_sample_model",
    "sample_model_path",
    "sample_model_record",
    "sample_model_summary",
    "sample_training_splits",
    "sha256_of",
]

WEIGHTS_DIR = Path(__file__).resolve().parent
MODEL_FILE = "sample_cnn.safetensors"
RECORD_FILE = "sample_cnn.json"
#: The key under which a model file's meta carries the record's headline figures.
META_KEY = "sample_model"


def sample_model_path() -> Path:
    """The shipped float16 model file (raises FileNotFoundError when absent)."""
    path = WEIGHTS_DIR / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"the sample model {str(path)!r} is missing from this installation; reinstall "
            "the package or build it with `python scripts/build_sample_model.py`"
        )
    return path


def sample_model_record() -> dict[str, Any]:
    """The shipped model's record (``sample_cnn.json``) as a dict."""
    path = WEIGHTS_DIR / RECORD_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"the sample model's record {str(path)!r} is missing; rebuild it with "
            "`python scripts/build_sample_model.py`"
        )
    return json.loads(path.read_text())


def sample_model_summary(record: dict[str, Any] | None = None) -> dict[str, Any]:
    """The headline figures every demo output carries: accuracy, chance, F1, where from."""
    r = sample_model_record() if record is None else record
    return {
        "model_source": "shipped",
        "test_accuracy": r["test_accuracy"],
        "chance_level": r["chance_level"],
        "macro_f1": r["macro_f1"],
        "test_slice": r["slices"]["test"],
        "slices": dict(r["slices"]),
        "generator_version": r["sample"]["generator_version"],
    }


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_sample_model() -> dict[str, Any]:
    """The record, once the shipped file's sha256 and the sample's version match it.

    Raises
    ------
    ValueError
        The file is not the one recorded, or the sample generator changed since
        it was trained (rebuild with ``python scripts/build_sample_model.py``).
    """
    from napari_brainfeatures.synthetic.microct import GENERATOR_VERSION

    record = sample_model_record()
    digest = sha256_of(sample_model_path())
    if digest != record["sha256"]:
        raise ValueError(
            f"{MODEL_FILE} has sha256 {digest!r}, its record says {record['sha256']!r}; "
            "rebuild both with `python scripts/build_sample_model.py`"
        )
    version = record["sample"]["generator_version"]
    if str(version) != str(GENERATOR_VERSION):
        raise ValueError(
            f"{MODEL_FILE} was trained on sample generator version {version!r}, the sample is "
            f"now version {GENERATOR_VERSION!r}; rebuild it with "
            "`python scripts/build_sample_model.py`"
        )
    return record


def install_sample_model(
    folder: str | os.PathLike[str], *, name: str = "sample_cnn.safetensors"
) -> Path:
    """Write the shipped model into ``folder`` as a float32 model file; return its path.

    The file reads with :func:`~napari_brainfeatures.models.cnn.load_cnn` like any
    trained model; its meta holds the record's headline figures under
    ``"sample_model"``.  An existing file of that name is kept when it already
    holds this model (same recorded sha256), else replaced.
    """
    from safetensors.torch import load_file

    from napari_brainfeatures.models.checkpoint import read_header
    from napari_brainfeatures.models.cnn import BrainAreaCNN, CNNConfig, save_cnn

    record = sample_model_record()
    target = Path(folder) / name
    if target.is_file():
        try:
            meta = read_header(target)["meta"]
            if meta.get(META_KEY, {}).get("sha256") == record["sha256"]:
                return target
        except ValueError:
            pass  # not a model file of ours: save_cnn refuses to replace it below
    src = sample_model_path()
    header = read_header(src)
    config = CNNConfig.from_dict(header["config"])
    model = BrainAreaCNN(config)
    tensors = {k: v.float() for k, v in load_file(str(src)).items()}  # fp16 -> fp32
    model.load_state_dict(tensors, strict=True)
    from napari_brainfeatures.classes import ClassTable

    meta = dict(header["meta"])
    classes = ClassTable.from_dict(meta.pop("classes"))
    meta[META_KEY] = {**sample_model_summary(record), "sha256": record["sha256"]}
    return save_cnn(target, model.eval(), classes=classes, meta=meta)


def load_sample_model(device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """The shipped model in float32, loaded through ``load_cnn``: ``(model, meta)``."""
    from napari_brainfeatures.models.cnn import load_cnn

    with tempfile.TemporaryDirectory(prefix="brainfeatures-sample-model-") as tmp:
        return load_cnn(install_sample_model(tmp), device=device)


def sample_training_splits(
    shape: tuple[int, int, int] | None = None,
    *,
    patch_size: int,
    per_class: int,
    eval_per_class: int,
    seed: int = 0,
    slices: tuple[int, int, int] | None = None,
) -> tuple[Any, tuple[int, int, int], Any]:
    """The training, validation and test patches of the sample: ``(volume, slices, splits)``.

    The sample (``make_microct_lazy(shape)``, generator seed 0; default shape
    ``DEFAULT_SHAPE``) is rendered slice by slice, so only the three split slices
    are drawn; ``slices`` (train, val, test) default to the paper's, 50 µm apart
    (:func:`~napari_brainfeatures.train.splits.split_slices`).  ``seed`` seeds the
    patch sampling (:func:`~napari_brainfeatures.train.splits.sample_splits`).
    """
    from napari_brainfeatures.synthetic import DEFAULT_SHAPE, VOXEL_SIZE_UM, make_microct_lazy
    from napari_brainfeatures.train.splits import sample_splits, split_slices

    shape = tuple(shape or DEFAULT_SHAPE)  # type: ignore[assignment]
    vol = make_microct_lazy(shape, chunks=(1, *shape[1:]))
    slices = slices or split_slices(shape[0], voxel_size=VOXEL_SIZE_UM[0])
    splits = sample_splits(
        vol.image,
        vol.areas,
        slices=slices,
        classes=vol.classes,
        patch_size=patch_size,
        per_class=per_class,
        eval_per_class=eval_per_class,
        seed=seed,
    )
    return vol, slices, splits
