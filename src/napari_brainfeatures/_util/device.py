"""The one rule for picking a torch device."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to compute on.

    Parameters
    ----------
    device : str, torch.device or None
        ``None``, ``""`` or ``"auto"``: ``cuda`` when available, else ``cpu``.  Anything
        else is checked: a name torch does not know, or ``cuda`` on a machine without
        CUDA, raises ``ValueError`` naming the value and the fix.
    """
    if device is None or device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
    return dev
