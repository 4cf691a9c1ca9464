"""The two trained VAEs of the series: how they are trained, and the stored copies.

Notebook 04 trains the 784-400-20 VAE with :func:`vae_lib.training.fit`; notebook 05 looks at
it, and at a VAE with a 2-D latent space, without training either: it loads the files in
``notebooks/pretrained/`` that this module writes. Retraining them is one command::

    python -m vae_lib.pretrained                 # both models, into notebooks/pretrained/
    python -m vae_lib.pretrained vae_z2 --out artifacts/pretrained --epochs 1   # a quick try

``vae_z20`` is notebook 04's recipe (784-400-20, seed 2024, 10 epochs); ``vae_z2`` is the same
network with a 2-D latent space (seed 2025, 5 epochs). A retrained file matches the stored
one up to the last-digit differences between computers. Files are stored in float16 (half
the size; what that costs is in :func:`vae_lib.checkpoint.save`).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from vae_lib import checkpoint, data, models, training

__all__ = ["FOLDER", "RECIPES", "Recipe", "build", "load", "main", "save", "train"]

#: Where the stored models live: ``notebooks/pretrained/`` of this repository.
FOLDER = Path(__file__).resolve().parents[1] / "notebooks" / "pretrained"


@dataclass(frozen=True)
class Recipe:
    """What trains one stored model: the VAE's sizes, the training seed and the epochs."""

    hidden: int
    latent: int
    seed: int
    epochs: int


RECIPES: dict[str, Recipe] = {
    "vae_z20": Recipe(hidden=400, latent=20, seed=2024, epochs=10),
    "vae_z2": Recipe(hidden=400, latent=2, seed=2025, epochs=5),
}


def _recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"No recipe called {name!r}: the stored models are {sorted(RECIPES)}.")
    return RECIPES[name]


def build(name: str) -> models.VAE:
    """An untrained VAE with the sizes of recipe `name` (initialised with ``nnx.Rngs(0)``)."""
    r = _recipe(name)
    return models.VAE(hidden=r.hidden, latent=r.latent, rngs=nnx.Rngs(0))


def train(
    name: str, train_images: np.ndarray, test_images: np.ndarray, *, epochs: int | None = None, progress: bool = True
) -> tuple[models.VAE, dict]:
    """Train recipe `name` with :func:`vae_lib.training.fit`; returns ``(model, history)``.

    Args:
      name: a key of :data:`RECIPES`.
      train_images, test_images: Fashion-MNIST as ``data.load_fashion_mnist`` returns it.
      epochs: fewer (or more) epochs than the recipe's, for a quick try; ``None`` keeps the recipe.
      progress: show a progress bar.
    """
    r = _recipe(name)
    model = build(name)
    history = training.fit(
        model,
        train_images,
        key=jax.random.key(r.seed),
        epochs=r.epochs if epochs is None else epochs,
        test_images=test_images,
        progress=progress,
    )
    return model, history


def save(name: str, model: models.VAE, history: dict, folder: str | os.PathLike) -> Path:
    """Write `model` and its training `history` to ``folder/<name>.msgpack`` in float16."""
    r = _recipe(name)
    if model.latent != r.latent:
        raise ValueError(f"recipe {name!r} has a {r.latent}-D latent space; this model's is {model.latent}-D.")
    info = {"hidden": r.hidden, "latent": r.latent, "seed": r.seed, "history": history}
    return checkpoint.save(Path(folder) / f"{name}.msgpack", model, info=info, dtype=np.float16)


def load(name: str, folder: str | os.PathLike = FOLDER) -> tuple[models.VAE, dict]:
    """The stored model `name` from `folder` (default :data:`FOLDER`) and its training history.

    Raises:
      FileNotFoundError: the file is not there (the message says which command makes it).
      ValueError: the file holds a model of other sizes than the recipe's.
    """
    r, path = _recipe(name), Path(folder) / f"{name}.msgpack"
    if not path.is_file():
        out = "" if Path(folder).resolve() == FOLDER else f" --out {folder}"
        raise FileNotFoundError(
            f"{path.name} not found in {folder}. Make it with `python -m vae_lib.pretrained {name}{out}` "
            f"(`make pretrained` makes both stored models)."
        )
    info = checkpoint.read_info(path)
    if (info.get("hidden"), info.get("latent")) != (r.hidden, r.latent):
        raise ValueError(
            f"{path.name} holds a {info.get('hidden')}-{info.get('latent')} model, but recipe {name!r} is "
            f"{r.hidden}-{r.latent}. Remake it with `python -m vae_lib.pretrained {name}`."
        )
    model = build(name)
    checkpoint.load(path, model)
    return model, info["history"]


def main(argv: list[str] | None = None) -> int:
    """``python -m vae_lib.pretrained [NAME ...] [--out FOLDER] [--epochs N]``."""
    parser = argparse.ArgumentParser(prog="python -m vae_lib.pretrained", description="Train the stored VAEs again.")
    parser.add_argument("names", nargs="*", default=list(RECIPES), help=f"which models (default: {list(RECIPES)})")
    parser.add_argument("--out", default=None, help="folder for the files (default: notebooks/pretrained)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (needs --out)")
    args = parser.parse_args(argv)
    for name in args.names:
        _recipe(name)
    if args.epochs is not None and args.out is None:
        parser.error("--epochs needs --out: a shorter run must not replace the stored models that notebook 05 loads.")
    out = FOLDER if args.out is None else Path(args.out)
    train_images, _ = data.load_fashion_mnist("train")
    test_images, _ = data.load_fashion_mnist("test")
    for name in args.names:
        t0 = time.perf_counter()
        model, history = train(name, train_images, test_images, epochs=args.epochs)
        path = save(name, model, history, out)
        print(
            f"{name}: {len(history['epoch'])} epoch(s) in {time.perf_counter() - t0:.0f} s, "
            f"test -ELBO {history['test_loss'][-1]:.2f} nats per image -> {path}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
