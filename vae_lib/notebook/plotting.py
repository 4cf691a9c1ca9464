"""Figures the notebooks share. Each function draws one figure and returns it.

Every figure gets a title and axis labels; the notebooks add the sentence that says
what to look at.

Importing this module sets matplotlib's default type to 14 pt (titles 1.2 times that), so that a
figure shown on a 1280x720 lecture slide (tools/build_slides.py) keeps its tick labels and
legends readable from the back of a room: at the notebooks' 100 dpi a 14 pt letter is 19 px.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from jax.typing import ArrayLike

from vae_lib.data import CLASS_NAMES, to_float

# Slide-readable type (see the module docstring); sizes given by name ("small", "large") scale with it.
SLIDE_FONT_PT = 14
plt.rcParams.update({"font.size": SLIDE_FONT_PT, "legend.fontsize": "medium", "axes.titlesize": "large"})

__all__ = ["class_examples", "image_grid", "latent_scatter", "reconstructions", "tile", "training_curves"]


def _as_images(images: ArrayLike) -> np.ndarray:
    """Images (N, 28, 28) or (N, 784), uint8 or floats in [0, 1], as floats (N, H, W) in [0, 1]."""
    x = to_float(images, who="plotting")
    side = int(round(x.shape[-1] ** 0.5))
    return x.reshape(len(x), side, side)


def tile(images: ArrayLike, ncols: int) -> np.ndarray:
    """Arrange N images (N, H, W) into one mosaic array with `ncols` columns and 1-px gaps."""
    images = _as_images(images)
    n, h, w = images.shape
    nrows = -(-n // ncols)
    out = np.ones((nrows * (h + 1) - 1, ncols * (w + 1) - 1), np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = img
    return out


def image_grid(images, ncols: int = 10, title: str = "", xlabel: str = "", ylabel: str = "", figsize=None):
    """Show images (N, 28, 28) or (N, 784), uint8 or [0, 1], as one grid."""
    mosaic = tile(images, ncols)
    fig, ax = plt.subplots(figsize=figsize or (ncols * 0.7, mosaic.shape[0] / mosaic.shape[1] * ncols * 0.7 + 0.6))
    ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    return fig


def class_examples(images, labels, per_class: int = 8, class_names: Sequence[str] = CLASS_NAMES):
    """A grid with one row per class (the first `per_class` examples of each)."""
    labels = np.asarray(labels)
    rows = [np.asarray(images)[np.flatnonzero(labels == c)[:per_class]] for c in range(len(class_names))]
    mosaic = tile(np.concatenate(rows), per_class)
    fig, ax = plt.subplots(figsize=(per_class * 0.55 + 2.2, len(class_names) * 0.55 + 1.0))  # fits a 720-px slide
    ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=1)
    step = mosaic.shape[0] / len(class_names)
    ax.set_yticks([(i + 0.5) * step for i in range(len(class_names))], class_names)
    ax.set_xticks([])
    ax.set_title("Fashion-MNIST: the first examples of each class")
    ax.set_xlabel(f"{per_class} training images per class")
    fig.tight_layout()
    return fig


def reconstructions(
    originals, reconstructed, title: str = "Originals (top) and reconstructions (bottom)", xlabel: str = "test image"
):
    """Originals in the top row, their reconstructions underneath."""
    originals, reconstructed = _as_images(originals), _as_images(reconstructed)
    n = len(originals)
    fig, ax = plt.subplots(figsize=(n * 0.8, 2.2))
    ax.imshow(tile(np.concatenate([originals, reconstructed]), n), cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([14, 43], ["original", "reconstruction"])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    return fig


def latent_scatter(
    codes,
    labels,
    title: str = "Latent codes of test images, coloured by class",
    class_names: Sequence[str] = CLASS_NAMES,
    ax=None,
):
    """Scatter 2-D latent codes coloured by class, with a legend of class names."""
    codes, labels = np.asarray(codes), np.asarray(labels)
    if codes.ndim != 2 or codes.shape[1] != 2:
        raise ValueError(f"latent_scatter needs codes of shape (N, 2); got {codes.shape}.")
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(8.5, 5))
    cmap = plt.get_cmap("tab10")
    for c, name in enumerate(class_names):
        sel = labels == c
        ax.scatter(codes[sel, 0], codes[sel, 1], s=3, color=cmap(c), label=name, alpha=0.6)
    ax.set_title(title)
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.legend(markerscale=4, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    if fig is not None:
        fig.tight_layout()
    return fig if fig is not None else ax.figure


def training_curves(
    history: dict,
    keys: Sequence[str] = ("train_loss", "test_loss"),
    title: str = "Negative ELBO during training",
    ylabel: str = "nats per image",
):
    """Plot per-epoch curves from a :func:`vae_lib.training.fit` history."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k in keys:
        if k in history:
            ax.plot(history["epoch"], history[k], marker="o", label=k.replace("_", " "))
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
