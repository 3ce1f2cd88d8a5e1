"""The ``brainfeatures`` command line: every pipeline stage, headless.

Each subcommand lives in ``napari_brainfeatures._cli.<module>``, which defines
``register(parser)`` (adds its arguments) and ``run(args) -> int``.  Modules
are imported only when their subcommand runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from napari_brainfeatures import __version__

__all__ = ["main", "COMMANDS"]

# name -> (module in napari_brainfeatures._cli, one-line help); pipeline order.
COMMANDS: dict[str, tuple[str, str]] = {
    "sample": (
        "sample",
        "write the synthetic sample data (micro-CT volume or VAE population) to zarr",
    ),
    "info": ("io", "describe a volume (shape, dtype, chunks, voxel size, levels)"),
    "convert": (
        "io",
        "convert a TIFF stack or folder of TIFF slices to chunked multiscale OME-Zarr",
    ),
    "tissue": (
        "tissue",
        "compute a volume's tissue mask (background, large holes out) into its workspace",
    ),
    "train-cnn": ("train", "sample patches from labels and train the brain-area CNN"),
    "evaluate": ("train", "test a trained CNN on held-out slices (accuracy, confusion, F1)"),
    "features": ("features", "dense sliding-window feature maps of a trained CNN into zarr"),
    "factors": ("factors", "NMF of a feature store and ROI-aligned factor selection"),
    "cluster": ("factors", "k-means / GMM cluster maps of features or NMF coefficients"),
    "analyse": ("analyse", "probes, V-measure, noise robustness, Gram matrix of CNN features"),
    "train-vae": ("latent", "train a beta-VAE, vanilla VAE or PCA on a population of sections"),
    "latent": ("latent", "latent traversal, projective and receptive fields, quality metrics"),
    "apply-live": (
        "explore",
        "label whole slices of a feature store with a live classifier saved in the Explore dock",
    ),
    "export": ("export", "a kept result as OME-Zarr, TIFF, CSV and PNG/SVG for other tools"),
    "demo": ("demo", "open napari with the sample data and widgets (--headless DIR: no window)"),
}


class _StageParser(argparse.ArgumentParser):
    """A stage's parser: a bad option is one line and a pointer to --help, not the usage."""

    def error(self, message: str) -> NoReturn:  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only`` set, that subcommand gets its full arguments."""
    parser = argparse.ArgumentParser(
        prog="brainfeatures",
        description="napari-brainfeatures: deep features for exploratory neuroanatomy.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    # -v also after the stage name; SUPPRESS keeps a subparser from resetting it to False.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log progress to stderr",
    )
    sub = parser.add_subparsers(dest="command", metavar="STAGE", parser_class=_StageParser)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, parents=[verbose])
        if name == only:
            mod = importlib.import_module(f"napari_brainfeatures._cli.{module}")
            mod.register(name, p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``brainfeatures``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(f"napari_brainfeatures._cli.{COMMANDS[args.command][0]}")
    with warnings.catch_warnings():
        warnings.showwarning = _warning_printer(args.command)
        return _run(module, args)


def _warning_printer(command: str) -> Any:
    """Show warnings as one line each (no source line): ``brainfeatures X: warning: ...``."""

    def show(message: Any, category: type[Warning], *_: Any, **__: Any) -> None:
        kind = "" if category is UserWarning else f" ({category.__name__})"
        print(f"brainfeatures {command}: warning{kind}: {message}", file=sys.stderr, flush=True)

    return show


def _said(err: BaseException) -> str:
    """An error in words: an operating system's ``[Errno 17] File exists: 'x'`` names the path."""
    if isinstance(err, OSError) and err.errno is not None and err.filename is not None:
        return f"{err.filename!s}: {err.strerror or err}"
    return str(err)


def _run(module: Any, args: argparse.Namespace) -> int:
    try:
        if getattr(args, "device", None):  # 'cuda' on a CPU-only torch, 'gpu': say so
            from napari_brainfeatures._util.device import resolve_device

            resolve_device(args.device)
        return int(module.run(args.command, args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, OSError) as err:
        # The core raises specific, explained errors: show them without a traceback.
        print(f"brainfeatures {args.command}: error: {_said(err)}", file=sys.stderr)
        return 2
    except ArithmeticError as err:  # e.g. training diverged: the message says what to lower
        print(f"brainfeatures {args.command}: error: {err}", file=sys.stderr)
        return 2
    except MemoryError as err:
        print(
            f"brainfeatures {args.command}: error: out of memory ({err}); use smaller sizes "
            "or fewer items",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"brainfeatures {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
