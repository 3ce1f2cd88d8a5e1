"""The Train dock's options for real sections: tissue mask, wide context, augmentation.

- **tissue mask** (the Annotate dock's, picked by itself when there is one): every
  patch (training, validation, test) has at least the given share of its window in
  tissue, so background and cut faces do not train the network.
- **wide context** K: the multi-scale network (:func:`~..train.recipe.make_config`),
  the patch seen as its central 1/K and as K × K averages; training patches lie
  inside an area by their central view, so a band narrower than the patch trains
  from interior patches.
- **augment for real scans**: smooth brightness gradients across the patch and local
  contrast changes (:mod:`~..train.augment`), besides the flips and rotations.
"""

from __future__ import annotations

from typing import Any

import napari
from magicgui.widgets import CheckBox, ComboBox

from napari_brainfeatures._widgets.tissue import TissueControls
from napari_brainfeatures.train.patches import MIN_TISSUE
from napari_brainfeatures.train.recipe import make_config

CONTEXTS = [("none (one view)", 1), ("2×2 averages", 2), ("4×4 averages", 4)]
STRENGTH = 0.5  # gradient and local-contrast strength when "augment for real scans" is on


class TrainOptions:
    """The three widgets (placed by the dock) and what they mean for sampling and training."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.tissue = TissueControls(
            viewer, least=MIN_TISSUE,
            tooltip="With a tissue mask, every patch (training, validation, test) has at "
            "least this share of its window in tissue: background and cut faces do not "
            "train the network.",
        )  # fmt: skip
        self.context = ComboBox(
            label="wide context", choices=CONTEXTS, value=1,
            tooltip="Multi-scale input: the patch seen as its central 1/K (the area, sharp) "
            "and whole as K×K averages (its surroundings); training patches lie inside an "
            "area by their central view.",
        )  # fmt: skip
        self.real_scans = CheckBox(
            text="augment for real scans (brightness gradients, local contrast)", value=False
        )

    @property
    def k(self) -> int:
        """The wide context's K (1: one view)."""
        return int(self.context.value)

    def sampling(self, image: Any, variant: str, patch_size: int) -> dict[str, Any]:
        """``iter_sample_splits`` options: tissue mask and central view.

        Raises
        ------
        ValueError
            The mask is not on the image's pixels, or the patch size does not suit
            the context (the message says which sizes do).
        """
        out: dict[str, Any] = {}
        tissue = self.tissue.values()["tissue"]
        if tissue is not None:
            if tuple(tissue.shape[-2:]) != tuple(image.shape[-2:]):
                raise ValueError(
                    f"the tissue mask {tuple(tissue.shape)!r} is not on the image's pixels "
                    f"{tuple(image.shape)!r}; compute it for this image (Annotate dock)"
                )
            out |= {"tissue": tissue, "min_tissue": float(self.tissue.min_context.value)}
        if self.k > 1:
            out["core"] = make_config(variant, patch_size=patch_size, context=self.k).view_size
        return out

    def augmentation(self) -> dict[str, float]:
        """``train_cnn``'s ``gradient`` and ``contrast`` strengths."""
        on = STRENGTH if self.real_scans.value else 0.0
        return {"gradient": on, "contrast": on}
