"""The network of a dense job: a model file loaded, the weights' identity, its classes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.models.cnn import BrainAreaCNN, load_cnn

__all__ = ["classes_of", "load_model", "model_id"]


def model_id(model: BrainAreaCNN) -> str:
    """SHA-256 of the weights (names, shapes, dtypes and bytes): the model's identity."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        arr = t.detach().cpu().contiguous().numpy()
        h.update(f"{name}:{arr.dtype}:{arr.shape};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def load_model(path: str | os.PathLike[str]) -> tuple[BrainAreaCNN, dict[str, Any], str]:
    """Load a model file (:func:`load_cnn`): ``(model in eval mode, header, file sha256)``."""
    model, meta = load_cnn(path)
    meta.pop("class_table", None)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return model, {"meta": meta, "path": str(Path(path).resolve())}, h.hexdigest()


def classes_of(header: dict[str, Any], model: BrainAreaCNN) -> ClassTable:
    """The model file's class table (``header`` from :func:`load_model`), else class1..K."""
    meta = header.get("meta", {}) if header else {}
    raw = meta.get("classes")
    if raw:
        table = ClassTable.from_dict(raw if isinstance(raw, dict) else {"classes": raw})
        if len(table) == model.config.n_classes:
            return table
    return ClassTable.from_names([f"class{i + 1}" for i in range(model.config.n_classes)])
