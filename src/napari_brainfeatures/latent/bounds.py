"""The range of every number a latent model's fit and exploration take: declared once.

Each is a :class:`~napari_brainfeatures._util.ranges.Bounded`: the argparse ``type``
of the ``train-vae`` / ``latent`` option and the check the Python API makes for the
same value (:func:`~.model.fit_latent_model`, :func:`~.train.train_vae`,
:func:`~.explore.projective_field`, :func:`~.explore.receptive_fields`: ValueError
naming the parameter).  No torch here: the command line reads it to build its parser.
"""

from __future__ import annotations

from typing import Any

from napari_brainfeatures._util.ranges import SEED, Bounded

__all__ = [
    "BATCH_SIZE",
    "BETA",
    "CHANNELS",
    "CLIP",
    "C_MAX",
    "EPOCHS",
    "KL_WARMUP",
    "LATENT",
    "LR",
    "N_DOWN",
    "N_IMAGES",
    "RECON_WEIGHT",
    "SECTION",
    "SEED",
    "STEP",
    "check_training",
]

#: Latent size L.
LATENT = Bounded("int", 1, 64)
#: KL weight β of the β-VAE.
BETA = Bounded("float", 0, 1e6, open_lo=True)
#: Passes over the training sections.
EPOCHS = Bounded("int", 1, 100_000)
#: Stride-2 convolutions of the VAE (None in Python: chosen for the section size).
N_DOWN = Bounded("int", 1, 12)
#: Convolution channels of the VAE.
CHANNELS = Bounded("int", 1, 1024)
#: Sections per training step.
BATCH_SIZE = Bounded("int", 1, 65_536)
#: Adam learning rate.
LR = Bounded("float", 0, 10, open_lo=True)
#: Epochs of the KL weight's linear ramp (0: none).
KL_WARMUP = Bounded("float", 0, 100_000)
#: Weight of the reconstruction term (1: the paper's loss; see ``train_vae``).
RECON_WEIGHT = Bounded("float", 0, 1e6, open_lo=True)
#: Pre-processing clip factor (standard deviations).
CLIP = Bounded("float", 0, 1000, open_lo=True)
#: A section index (checked against the population where it is known).
SECTION = Bounded("int", 0, 999_999)
#: Half-range of latent sweeps.
C_MAX = Bounded("float", 0, 100, open_lo=True)
#: Spacing of a latent sweep (None in Python: the default step).
STEP = Bounded("float", 0, 100, open_lo=True)
#: Sections for receptive fields (None in Python: all).
N_IMAGES = Bounded("int", 1, 999_999)

_TRAINING = {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "lr": LR, "kl_warmup": KL_WARMUP,
             "recon_weight": RECON_WEIGHT}  # fmt: skip


def check_training(**values: Any) -> dict[str, Any]:
    """The VAE training options among ``values`` checked (ranges above); the rest unchanged."""
    return {k: _TRAINING[k].check(k, v) if k in _TRAINING else v for k, v in values.items()}
