"""The Train dock's repeats: the sampled patches trained once per seed, each run tested.

With "repeats" above 1, Train runs
:func:`~napari_brainfeatures.train.plan.fit_and_test` for seeds 0..N−1 (one
after the other, in the dock's worker): each model is saved in the workspace
with its seed in the name (``cnn-…_seedS.safetensors``) and records its test
scores; the dock then shows the first run's model and the median and range of
test accuracy over the runs, with every run's accuracy in the status line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_brainfeatures._widgets._common import say_file
from napari_brainfeatures.latent.repeats import iter_repeats, seeded_path, summarise
from napari_brainfeatures.progress import ProgressGen
from napari_brainfeatures.train.evaluation import trained_with_flips


def start_repeats(widget: Any, path: Path) -> None:
    """Train the dock's sampled patches with seeds 0..N−1 (its "repeats"), each beside ``path``."""
    splits, n = widget.splits, int(widget.repeats.value)
    seeds, voxel = list(range(n)), tuple(float(v) for v in widget.image.value.scale[-3:])
    train = dict(variant=widget.variant.value, epochs=widget.epochs.value, classes=widget.classes,
                 batch_size=widget.batch_size.value, voxel_size=voxel,
                 context=widget.scan_options.k, **widget.scan_options.augmentation())  # fmt: skip

    def one(seed: int) -> ProgressGen[tuple[Any, Any]]:
        from napari_brainfeatures.train.plan import fit_and_test

        out = seeded_path(path, seed)
        return fit_and_test(splits, out, tta=widget.tta.value, seed=seed, **train)

    def done(runs: list[tuple[Any, Any]]) -> None:
        widget._done = True
        show_repeats(widget, seeds, runs)

    widget.history, widget._checkpoint, widget._done = [], None, False
    say_file(widget.status, f"training {n} runs (seeds 0–{n - 1}); the first is kept as {{}}",
             seeded_path(path, 0))  # fmt: skip

    def progress(rec: Any) -> None:
        if "run" in rec.values:  # a run starts: its own curves
            widget.history = []
        widget._on_epoch(rec)

    widget.runner.start(iter_repeats(one, seeds), name=f"Train CNN ×{n}",
                        on_progress=progress, on_done=done)  # fmt: skip


def show_repeats(widget: Any, seeds: list[int], runs: list[tuple[Any, Any]]) -> dict[str, Any]:
    """Adopt the first run's model; say the median [min–max] of test accuracy and each run's."""
    ev, first = runs[0]
    widget.model, widget.meta, widget.model_file = first.model, first.meta, first.path
    widget.tta.value = trained_with_flips(first.meta)
    rows = [{"test_accuracy": e.accuracy, "macro_f1": e.macro_f1} for e, _ in runs]
    spread = summarise(rows)
    each = ", ".join(f"seed {s}: {e.accuracy:.1%}" for s, (e, _) in zip(seeds, runs, strict=True))
    acc = spread["test_accuracy"]
    widget.status.value = (
        f"test accuracy {acc.median:.1%} [{acc.low:.1%}–{acc.high:.1%}] over {len(runs)} runs "
        f"({each}); macro F1 {spread['macro_f1']}; showing seed {seeds[0]}'s model, "
        f"each saved as {Path(first.path).name.replace(f'_seed{seeds[0]}', '_seedS')}"
    )
    widget.repeat_runs = {"seeds": seeds, "runs": rows, "summary": spread}
    return widget.repeat_runs
