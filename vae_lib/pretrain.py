"""Training to convergence, and the models of notebook 06: ``python -m vae_lib.pretrain``.

Every recipe trains on the same 50,000 of Fashion-MNIST's 60,000 training images; the other
10,000 (:func:`split_train_validation`, seed 0) are the validation split. A recipe with
``patience`` stops early: after each epoch the validation negative ELBO is measured, the
best parameters are kept, and training ends after ``patience`` epochs without a new best
(or at ``max_epochs``). A recipe without it trains a fixed number of epochs.

The converged model (``vae_converged``) is then evaluated on the whole test set with the
importance-weighted bound, k = 5000 samples per image, each test image binarized once with
the key ``jax.random.key(EVAL_BINARIZATION_SEED)`` (:func:`vae_lib.evaluation.log_likelihood`);
the result and the training history are stored in the checkpoint's ``info``. ::

    python -m vae_lib.pretrain                       # every recipe, into notebooks/pretrained/
    python -m vae_lib.pretrain vae_converged         # one; resumes from artifacts/pretrain/ if cut off
    python -m vae_lib.pretrain sweep_z2 --out artifacts/try --max-epochs 2   # a quick try

Progress is one line per epoch. After every epoch the full training state (parameters, Adam's
moments, the best parameters so far, the history) is written to
``artifacts/pretrain/<name>.resume.msgpack``; running the same command again continues from it
(``--fresh`` starts over). The finished model goes to ``<out>/<name>.msgpack`` in float16,
loadable with :func:`vae_lib.checkpoint.load_model`.

Warm-up (``warmup_epochs``) raises beta linearly, one value per epoch (epoch e of W uses
e / W); free bits are :func:`vae_lib.losses.beta_vae_loss`'s ``free_bits``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization

from vae_lib import checkpoint, data, evaluation, losses, models, training

__all__ = [
    "EVAL_BINARIZATION_SEED",
    "FOLDER",
    "RECIPES",
    "RESUME_FOLDER",
    "Recipe",
    "build",
    "main",
    "split_train_validation",
    "train",
]

FOLDER = Path(__file__).resolve().parents[1] / "notebooks" / "pretrained"
RESUME_FOLDER = Path("artifacts") / "pretrain"
EVAL_BINARIZATION_SEED = 2020
VALIDATION_SIZE = 10_000


@dataclass(frozen=True)
class Recipe:
    """One model: its sizes, its objective and how long it trains."""

    hidden: tuple[int, ...]
    latent: int
    seed: int
    max_epochs: int
    beta: float = 1.0
    free_bits: float = 0.0
    warmup_epochs: int = 0
    patience: int | None = None  # early stopping on the validation split; None: max_epochs exactly
    batch_size: int = 128
    learning_rate: float = 1e-3
    eval_k: int = 0  # > 0: the importance-weighted bound on the whole test set after training


def _sweep(**kw) -> Recipe:
    base = {"hidden": (256,), "latent": 32, "seed": 6, "max_epochs": 10}
    return Recipe(**{**base, **kw})


RECIPES: dict[str, Recipe] = {
    "vae_converged": Recipe(hidden=(300, 300), latent=40, seed=40, max_epochs=400, patience=25, eval_k=5000),
    # notebook 06, section 1: beta from 0.1 to 10 (latent 32; beta = 1 is sweep_z32)
    "sweep_beta0.1": _sweep(beta=0.1),
    "sweep_beta0.3": _sweep(beta=0.3),
    "sweep_beta3": _sweep(beta=3.0),
    "sweep_beta10": _sweep(beta=10.0),
    # section 2: the latent size from 2 to 64 at beta = 1, and two remedies at 64
    "sweep_z2": _sweep(latent=2),
    "sweep_z4": _sweep(latent=4),
    "sweep_z8": _sweep(latent=8),
    "sweep_z16": _sweep(latent=16),
    "sweep_z32": _sweep(latent=32),
    "sweep_z64": _sweep(latent=64),
    "sweep_z64_warmup": _sweep(latent=64, warmup_epochs=5),
    "sweep_z64_freebits": _sweep(latent=64, free_bits=0.25),
}


def _recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"No recipe called {name!r}; the recipes are {sorted(RECIPES)}.")
    return RECIPES[name]


def build(name: str) -> models.VAE:
    """An untrained VAE with recipe `name`'s sizes."""
    r = _recipe(name)
    return models.VAE(hidden=r.hidden, latent=r.latent, rngs=nnx.Rngs(r.seed))


def split_train_validation(images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's training images cut into 50,000 to train on and 10,000 to validate on.

    A seeded permutation (``jax.random.key(seed)``); the test split stays untouched for the
    final number.
    """
    if len(images) <= VALIDATION_SIZE:
        raise ValueError(f"need more than {VALIDATION_SIZE} images to cut a validation split; got {len(images)}.")
    order = np.asarray(jax.random.permutation(jax.random.key(seed), len(images)))
    return images[order[VALIDATION_SIZE:]], images[order[:VALIDATION_SIZE]]


def _beta(r: Recipe, epoch: int) -> float:
    return r.beta * (min(1.0, epoch / r.warmup_epochs) if r.warmup_epochs else 1.0)


def _loss(r: Recipe, epoch: int):
    return _loss_for(_beta(r, epoch), r.free_bits)


@functools.cache
def _loss_for(beta: float, free_bits: float):
    """One loss function per (beta, free bits): the loss is a static part of the TrainState, so a
    new ``functools.partial`` each epoch would make the fused epoch compile again every epoch."""
    if beta == 1.0 and free_bits == 0.0:
        return losses.vae_loss
    return functools.partial(losses.beta_vae_loss, beta=beta, free_bits=free_bits)


def _resume_path(folder: Path, name: str) -> Path:
    return folder / f"{name}.resume.msgpack"


def _save_resume(path: Path, name: str, state, best, epoch: int, history: dict) -> None:
    leaves = [np.asarray(a) for a in jax.tree.leaves((state.params, state.opt_state, state.step, best))]
    blob = serialization.msgpack_serialize(
        {"recipe": json.dumps(asdict(_recipe(name))), "epoch": epoch, "history": json.dumps(history), "leaves": leaves}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(blob)
    tmp.replace(path)


def _load_resume(path: Path, name: str, state):
    raw = serialization.msgpack_restore(path.read_bytes())
    if json.loads(raw["recipe"]) != json.loads(json.dumps(asdict(_recipe(name)))):
        raise ValueError(f"{path} was written for another recipe than {name!r}'s; run with --fresh to start over.")
    template = (state.params, state.opt_state, state.step, state.params)
    leaves = [
        raw["leaves"][str(i)] if isinstance(raw["leaves"], dict) else raw["leaves"][i]
        for i in range(len(raw["leaves"]))
    ]
    params, opt_state, step, best = jax.tree.unflatten(jax.tree.structure(template), [jnp.asarray(a) for a in leaves])
    return (
        state.replace(params=params, opt_state=opt_state, step=step),
        best,
        int(raw["epoch"]),
        json.loads(raw["history"]),
    )


def train(
    name: str,
    train_images: np.ndarray,
    valid_images: np.ndarray,
    *,
    max_epochs: int | None = None,
    resume_folder: Path | None = RESUME_FOLDER,
    fresh: bool = False,
    log=print,
) -> tuple[models.VAE, dict]:
    """Train recipe `name`; returns the model (its best parameters) and the history.

    Args:
      name: a key of :data:`RECIPES`.
      train_images, valid_images: uint8 images, as :func:`split_train_validation` returns them.
      max_epochs: overrides the recipe's (for a quick try).
      resume_folder: where the resume file is written after each epoch (None: no resume file).
      fresh: ignore an existing resume file.
      log: called with one line of progress per epoch.

    Returns:
      ``(model, history)``; history holds ``epoch``, ``beta``, ``train_loss``, ``valid_loss``,
      ``valid_log_px_given_z``, ``valid_kl`` per epoch, ``best_epoch`` and ``stopped``
      (``"early"`` or ``"max_epochs"``).
    """
    r = _recipe(name)
    epochs = r.max_epochs if max_epochs is None else max_epochs
    model = build(name)
    state = training.create_train_state(model, learning_rate=r.learning_rate, loss_fn=_loss(r, 1))
    best, start, history = state.params, 0, {"epoch": [], "beta": [], "train_loss": []}
    resume = _resume_path(Path(resume_folder), name) if resume_folder is not None else None
    if resume is not None and resume.is_file() and not fresh:
        state, best, start, history = _load_resume(resume, name, state)
        log(f"{name}: resuming after epoch {start} from {resume}")
    k_train, k_valid = jax.random.split(jax.random.key(r.seed))
    train_images = jnp.asarray(train_images)
    stopped = "max_epochs"
    for epoch in range(start + 1, epochs + 1):
        if history.get("best_epoch") and r.patience is not None and epoch - history["best_epoch"] > r.patience:
            stopped = "early"
            break
        t0 = time.perf_counter()
        state = state.replace(loss_fn=_loss(r, epoch))
        state, per_step = training.train_epoch_fused(
            state, train_images, jax.random.fold_in(k_train, epoch), r.batch_size
        )
        if not np.all(np.isfinite(per_step["loss"])):
            raise training.NonFiniteLossError(int(state.step) + 1, history)
        nnx.update(model, state.params)
        valid = evaluation.evaluate(model, valid_images, k_valid)
        history["epoch"].append(epoch)
        history["beta"].append(_beta(r, epoch))
        history["train_loss"].append(float(np.mean(per_step["loss"], dtype=np.float64)))
        for key, value in valid.items():
            history.setdefault("valid_" + key, []).append(value)
        if r.patience is None or valid["loss"] < min(history["valid_loss"][:-1], default=np.inf):
            best, history["best_epoch"] = jax.tree.map(jnp.copy, state.params), epoch  # the next epoch donates state
        if resume is not None:
            _save_resume(resume, name, state, best, epoch, history)
        log(
            f"{name} epoch {epoch}/{epochs}: train {history['train_loss'][-1]:.2f}, valid -ELBO {valid['loss']:.2f} "
            f"(KL {valid['kl']:.2f}; best {min(history['valid_loss']):.2f} at epoch {history['best_epoch']}), "
            f"{time.perf_counter() - t0:.1f} s"
        )
    history["stopped"] = stopped
    nnx.update(model, best)
    return model, history


def evaluate_test(model: models.VAE, test_images: np.ndarray, k: int, log=print) -> dict:
    """The test set's L_k (k samples per image), each image binarized once with EVAL_BINARIZATION_SEED."""
    x = evaluation.binarize_once(test_images, jax.random.key(EVAL_BINARIZATION_SEED))
    t0 = time.perf_counter()
    step = max(1, len(x) // 20)

    def progress(done: int) -> None:
        if done % step < 50 or done == len(x):
            log(f"  L_{k}: {done}/{len(x)} test images, {time.perf_counter() - t0:.0f} s")

    out = evaluation.log_likelihood(model, x, jax.random.key(EVAL_BINARIZATION_SEED + 1), k, progress=progress)
    lp, el = out["log_px"], out["elbo"]
    return {
        "k": k,
        "binarization_seed": EVAL_BINARIZATION_SEED,
        "sample_seed": EVAL_BINARIZATION_SEED + 1,
        "test_images": len(x),
        "nll": float(-lp.mean()),
        "nll_standard_error": float(lp.std(ddof=1) / np.sqrt(len(lp))),
        "neg_elbo": float(-el.mean()),
        "log_px": [round(float(v), 3) for v in lp],
        "elbo": [round(float(v), 3) for v in el],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m vae_lib.pretrain [NAME ...] [--out FOLDER] [--max-epochs N] [--fresh]``."""
    parser = argparse.ArgumentParser(prog="python -m vae_lib.pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=list(RECIPES), help="which recipes (default: all)")
    parser.add_argument("--out", default=None, help="folder for the models (default: notebooks/pretrained)")
    parser.add_argument("--max-epochs", type=int, default=None, help="fewer epochs, for a try (needs --out)")
    parser.add_argument("--fresh", action="store_true", help="ignore resume files and start over")
    parser.add_argument("--eval-k", type=int, default=None, help="samples per test image for L_k (needs --out)")
    args = parser.parse_args(argv)
    for name in args.names:
        _recipe(name)
    if (args.max_epochs is not None or args.eval_k is not None) and args.out is None:
        parser.error("--max-epochs and --eval-k need --out: a shorter run must not replace the stored models.")
    out = FOLDER if args.out is None else Path(args.out)
    resume_folder = RESUME_FOLDER if args.out is None else Path(args.out) / "resume"
    train_all, _ = data.load_fashion_mnist("train")
    test_images, _ = data.load_fashion_mnist("test")
    train_images, valid_images = split_train_validation(train_all)
    for name in args.names:
        t0 = time.perf_counter()
        model, history = train(
            name, train_images, valid_images, max_epochs=args.max_epochs, resume_folder=resume_folder, fresh=args.fresh
        )
        info = {"recipe": name, **asdict(_recipe(name)), "history": history, "train_seconds": time.perf_counter() - t0}
        k = _recipe(name).eval_k if args.eval_k is None else args.eval_k
        if k:
            info["evaluation"] = evaluate_test(model, test_images, k)
            e = info["evaluation"]
            print(
                f"{name}: test -L_{k} = {e['nll']:.2f} ± {e['nll_standard_error']:.2f} nats, -ELBO {e['neg_elbo']:.2f}"
            )
        path = checkpoint.save(out / f"{name}.msgpack", model, info=info, dtype=np.float16)
        print(f"{name}: wrote {path} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
