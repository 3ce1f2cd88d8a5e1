"""In-memory images share a workspace by layer name: say when it is another image's.

A layer without a source (an array added from the console, a plugin's output)
has its workspace under ``$BRAINFEATURES_HOME`` by its name, so an unrelated
image given the same name would be shown the first one's labels, models and
results.  The first image's fingerprint (a strided sample of its middle slice,
with shape and dtype) is kept beside the workspace; another image under that
name is told so, once per layer.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from napari.utils.notifications import show_warning

from napari_brainfeatures.workspace import Workspace, write_json_atomic

FILE = "memory_image.json"  # in the workspace: the fingerprint of the image it was made for
CHECKED = "brainfeatures_same_image_checked"  # layer metadata: told (or found the same) once


def fingerprint(data: Any) -> str:
    """A cheap fingerprint of an image array: shape, dtype and a ≤ 64 x 64 sample."""
    plane = data[data.shape[0] // 2] if data.ndim == 3 else data
    step = max(1, max(plane.shape) // 64)
    sample = np.ascontiguousarray(np.asarray(plane[::step, ::step]))
    digest = hashlib.sha1(sample.tobytes())
    digest.update(repr((tuple(data.shape), str(data.dtype))).encode())
    return digest.hexdigest()


def same_image(ws: Workspace, layer: Any, source: str | None) -> Workspace:
    """``ws``; for an in-memory image, a warning when the workspace is another image's."""
    if source is not None or layer.metadata.get(CHECKED) or ws.read_only:
        return ws
    layer.metadata[CHECKED] = True
    data = layer.data[-1] if layer.multiscale else layer.data  # the smallest level: quick
    mine, path = fingerprint(data), ws.root / FILE
    try:
        kept = json.loads(path.read_text()).get("fingerprint") if path.exists() else None
    except (OSError, ValueError):
        kept = None
    if kept is None:
        write_json_atomic(path, {"fingerprint": mine, "name": layer.name})
    elif kept != mine:
        show_warning(
            f"The workspace of {layer.name!r} ({ws.root.name}) was made for another image of "
            "that name (its pixels differ): the labels, models and results it holds are that "
            "image's. Rename this layer to give it a workspace of its own."
        )
    return ws
