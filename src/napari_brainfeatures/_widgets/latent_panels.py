"""Parts of the latent dock: the latent sliders, its plots and its comparison table.

What :class:`~napari_brainfeatures._widgets.latent.LatentWidget` shows, kept
apart from what it does: one slider per latent, the training curves and the
impact map in one matplotlib figure, and the table with a row per model tried
in this session (repeats of one model: median and range, or a row per run).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from magicgui.widgets import Container, FloatSlider, Table
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike, NDArray

from napari_brainfeatures._widgets._common import align_labels
from napari_brainfeatures.latent.codes import PopulationCodes
from napari_brainfeatures.latent.explore import impact_covariance
from napari_brainfeatures.latent.repeats import summarise

# comparison table: row key -> column title, in display order
QUALITY_COLUMNS = {
    "active": "active",
    "mig": "MIG",
    "disentanglement": "disentangl.",
    "disentanglement_active": "disent. active",
    "cwssim_recon": "CW-SSIM",
    "cwssim_artifact": "CW-SSIM artifact",
    "artifact_penalty": "penalty",
    "pca_fd_recon": "FD recon",
    "pca_fd_samples": "FD samples",
}
#: What each column means (the table's header tooltips and the dock's help line).
QUALITY_HELP = {
    "active": "latents the model uses (code variance over the population > 0.01)",
    "mig": "mutual information gap on the population's known factors (Chen et al. 2018), "
    "0–1, higher: each factor in one latent; unused latents do not move it",
    "disentanglement": "the paper's score from the ROI × latent KL impact (all latents)",
    "disentanglement_active": "the paper's score over active latents only",
    "cwssim_recon": "CW-SSIM of reconstructions against the clean sections (1: identical)",
    "cwssim_artifact": "CW-SSIM of reconstructions of artifact sections against their clean "
    "versions: higher, the model leaves the artifact out",
    "artifact_penalty": "the paper's artifact penalty: CW-SSIM lost on artifact sections "
    "relative to clean ones (lower is better)",
    "pca_fd_recon": "PCA-Fréchet distance between reconstructions and the sections "
    "(lower: closer distributions)",
    "pca_fd_samples": "PCA-Fréchet distance between samples from the prior and the sections",
}


class LatentSliders(Container):
    """One slider per latent over ``mean ± 3 std`` of the population's codes.

    Latents the model does not use (a β-VAE switches some off) are marked
    "(inactive)": their sliders barely change the decode, so the dock says so
    rather than leave the user guessing.  ``on_move`` is called after every
    move by the user and after :meth:`set_z`, not while sliders are built.
    """

    def __init__(self, on_move: Callable[[], Any]) -> None:
        super().__init__(labels=True)
        self._on_move = on_move
        self._quiet = False

    def build(self, codes: PopulationCodes) -> None:
        """Replace the sliders: one per latent, centred on the population's mean code."""
        lo, hi = codes.bounds()
        self._quiet = True
        self.clear()
        for k in range(len(codes.mean)):
            off = codes.active is not None and not codes.active[k]
            s = FloatSlider(label=f"z{k} (inactive)" if off else f"z{k}", min=float(lo[k]),
                            max=float(hi[k]), value=float(codes.mean[k]), step=None)  # fmt: skip
            s.tooltip = f"code std over the population {codes.std[k]:.3g}: " + (
                "the model does not use this latent" if off else "±3 std"
            )
            s.changed.connect(self._moved)
            self.append(s)
        align_labels(self)
        self._quiet = False

    def _moved(self, _event: Any = None) -> None:
        if not self._quiet:
            self._on_move()

    @property
    def z(self) -> NDArray[np.float32]:
        """The latent vector the sliders show, ``(L,)``."""
        return np.array([s.value for s in self], dtype=np.float32)

    def set_z(self, z: ArrayLike) -> None:
        """Move the sliders to ``z`` (clipped to their ranges), then call ``on_move`` once."""
        self._quiet = True
        for s, v in zip(self, np.asarray(z, dtype=np.float64), strict=True):
            s.value = float(np.clip(v, s.min, s.max))
        self._quiet = False
        self._on_move()


def plot_curves(figure: Figure, history: Sequence[Mapping[str, float]]) -> None:
    """Reconstruction and KL loss per epoch, training and validation, side by side."""
    figure.clear()
    ep = [h.get("epoch", i + 1) for i, h in enumerate(history)]  # from 1
    for i, key in enumerate(("recon", "kl")):
        ax = figure.add_subplot(1, 2, i + 1)
        ax.plot(ep, [h[key] for h in history], ".-", label="train")  # dots: 1 epoch shows
        ax.plot(ep, [h[f"val_{key}"] for h in history], ".-", label="val")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))  # a narrow dock: few
        ax.set_xlim(0.5, max(ep) + 0.5)  # one epoch: an axis around it, not 0.96 … 1.04
        ax.set_title(key)
        ax.set_xlabel("epoch")
    ax.legend(fontsize="small")


def show_training(figure: Figure, meta: Mapping[str, Any], name: str) -> None:
    """The model's recorded curves, or why there are none (never an empty box)."""
    history = (meta.get("training") or {}).get("history") or []
    keys = ("recon", "kl", "val_recon", "val_kl")
    if history and all(k in history[0] for k in keys):
        plot_curves(figure, history)
        return
    figure.clear()
    why = (
        "PCA is fitted in one step: no epochs, no curves"
        if meta.get("model_type") == "pca"
        else f"this {name} file records no training curves"
    )
    figure.text(0.5, 0.5, why, ha="center", va="center", fontsize=9, color="grey", wrap=True)


#: Allen-style ROI abbreviations the sample population (and Allen sections) use.
ROI_LONG_NAMES = {
    "CTX": "cortex", "HPF": "hippocampal formation", "STR": "striatum", "TH": "thalamus",
    "VL": "lateral ventricle", "HY": "hypothalamus", "CB": "cerebellum", "MB": "midbrain",
}  # fmt: skip


def impact_notes(impact: NDArray[Any], roi_names: Sequence[str], active: Any) -> str:
    """What the impact matrix rests on: the ROIs' names, and a largest impact on a dead latent."""
    known = [f"{n} {ROI_LONG_NAMES[n]}" for n in roi_names if n in ROI_LONG_NAMES]
    text = f"ROIs: {', '.join(known)}" if known else ""
    if active is not None and len(active) == impact.shape[1] and impact.size:
        k = int(np.unravel_index(np.argmax(impact), impact.shape)[1])
        if not active[k]:
            text += (
                f"\nthe largest impact is on z{k}, an inactive latent (KL near 0: the model "
                "does not use it), so it is noise, not structure; the score over active "
                "latents leaves it out"
            )
    return text.strip()


def plot_impact(
    figure: Figure, impact: NDArray[Any], roi_names: Sequence[str], active: NDArray[Any] | None
) -> None:
    """The ROI × latent impact map beside the latents' covariance; inactive latents in grey."""
    figure.clear()
    L = impact.shape[1]
    zs = [f"z{k}" for k in range(L)]
    ax = figure.add_subplot(1, 2, 1)
    ax.imshow(impact, cmap="viridis", aspect="auto")
    ax.set_yticks(range(len(roi_names)), roi_names, fontsize="small")
    ax.set_xticks(range(L), zs, fontsize="x-small")
    ax.set_title("impact (KL)", fontsize="small")
    ax2 = figure.add_subplot(1, 2, 2)
    ax2.imshow(impact_covariance(impact), cmap="magma")
    ax2.set_xticks(range(L), zs, fontsize="x-small")
    ax2.set_yticks(range(L), zs, fontsize="x-small")
    ax2.set_title("covariance A", fontsize="small")
    if active is not None and len(active) == L and not active.all():
        ax.set_title("impact (KL); grey: inactive", fontsize="small")
        ticks = [*ax.get_xticklabels(), *ax2.get_xticklabels(), *ax2.get_yticklabels()]
        for k, tick in enumerate(ticks):
            if not active[k % L]:
                tick.set_color("0.6")


def fill_comparison(
    table: Table, rows: Mapping[str, Mapping[int, Mapping[str, float]]], *, each_run: bool = False
) -> None:
    """Show ``rows`` (model label -> seed -> scores) in ``table``, with the columns any run has.

    A model trained once is one row; repeats of one model (several seeds) are
    one row of ``median [min–max]`` per score, or one row per run with ``each_run``.
    """
    columns = [c for c in QUALITY_COLUMNS if any(c in r for v in rows.values() for r in v.values())]
    lines: dict[str, list[str]] = {}
    for label, runs in rows.items():
        if len(runs) == 1 or each_run:
            for seed, r in runs.items():
                name = label if len(runs) == 1 else f"{label} seed {seed}"
                lines[name] = [_fmt(r.get(c)) for c in columns]
        else:
            lines[f"{label} ×{len(runs)}"] = [_spread(runs.values(), c) for c in columns]
    table.value = {
        "data": list(lines.values()),
        "index": list(lines),
        "columns": [QUALITY_COLUMNS[c] for c in columns],
    }
    q = table.native
    q.resizeColumnsToContents()
    for j, c in enumerate(columns):
        item = q.horizontalHeaderItem(j)
        if item is not None:
            item.setToolTip(QUALITY_HELP.get(c, ""))
    q.setToolTip("\n".join(f"{QUALITY_COLUMNS[c]}: {QUALITY_HELP[c]}" for c in columns))


def _spread(runs: Any, key: str) -> str:
    """``median [min–max]`` of ``key`` over the runs that have it (empty where none has)."""
    values = [{key: r[key]} for r in runs if r.get(key) is not None]
    spread = summarise(values).get(key) if values else None
    return str(spread) if spread is not None else ""


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int | np.integer):
        return str(value)
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
