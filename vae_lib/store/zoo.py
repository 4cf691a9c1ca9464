"""The series' stored models: one recipe table, how each is trained, and the files that hold them.

Notebook 05 looks at two VAEs trained as notebook 04 trains them (``vae_z20``, ``vae_z2``);
notebook 06 at twelve small VAEs of a sweep over beta and the latent size (``sweep_*``) and at
one trained to convergence (``vae_converged``). None of them is trained when a notebook runs:
the notebooks load the files in this package's ``models/`` folder (:data:`FOLDER`), stored in
float16 (what that costs: :func:`vae_lib.store.checkpoint.save`). Retraining is one command::

    python -m vae_lib.cli.train_models vae_z2                 # one model, into vae_lib/store/models/
    python -m vae_lib.cli.train_models sweep_z2 --out artifacts/try --max-epochs 2   # a quick try

Every recipe trains with :func:`vae_lib.training.fit`. Two kinds of held-out data:

* ``holdout="test"`` (notebook 04's recipe): train on all 60,000 training images for a fixed
  number of epochs and score the test set after each (history keys ``test_*``);
* ``holdout="validation"``: train on 50,000 and score the other 10,000
  (:func:`split_train_validation`) after each epoch (``valid_*``); with ``patience`` the best
  parameters are kept and training stops after ``patience`` epochs without a new best. KL
  warm-up raises beta linearly, one value per epoch (epoch e of W uses e / W), and then the best
  epoch is chosen among epochs W and later only (patience counts from there); free bits are
  :func:`vae_lib.losses.beta_vae_loss`'s. The held-out score is always the true negative ELBO.
  A run records ``train_loss`` (the true negative ELBO) and, for the recipes with beta, warm-up
  or free bits, ``train_objective`` (what was minimised). The stored files of those recipes were
  trained before the two were told apart: their ``train_loss`` is the objective.

Issue #25's recipes add a cosine decay of the learning rate (:func:`learning_rate`), the gated VAE
and an average of the weights (:func:`vae_lib.training.ema_of_params`), which is then scored and
kept; the raw weights' held-out loss goes to ``valid_loss_raw``.

A run writes ``<resume folder>/<name>.resume.msgpack`` after every epoch (the whole training
state, :func:`vae_lib.store.checkpoint.save_tree`), and the same command continues a cut-off
run from it. A recipe with ``eval_k`` is then scored on the whole test set with the
importance-weighted bound L_k (each test image binarized once with the key
``jax.random.key(EVAL_BINARIZATION_SEED)``; :func:`evaluate_test`).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from vae_lib import data, evaluation, losses, models, training
from vae_lib.store import checkpoint

__all__ = [
    "EVAL_BINARIZATION_SEED",
    "FOLDER",
    "RECIPES",
    "RESUME_FOLDER",
    "Recipe",
    "build",
    "evaluate_test",
    "learning_rate",
    "load",
    "make",
    "split_train_validation",
    "train",
]

#: Where the stored models live: ``vae_lib/store/models/``, installed with the package.
FOLDER = Path(__file__).resolve().parent / "models"
#: Where a run keeps its resume files (relative to the current directory).
RESUME_FOLDER = Path("artifacts") / "resume"
EVAL_BINARIZATION_SEED = 2020
VALIDATION_SIZE = 10_000
EMA_VALIDATION_SEED = 99  # scores the averaged weights: the key of the trial run the recipe reproduces


@dataclass(frozen=True)
class Recipe:
    """One stored model: its sizes, its objective and how it trains."""

    hidden: tuple[int, ...]
    latent: int
    seed: int  # the training key, jax.random.key(seed)
    max_epochs: int
    init_seed: int | None = None  # nnx.Rngs(init_seed) initialises the weights; None: seed
    holdout: str = "validation"  # "validation" (a split of the training set) or "test"
    beta: float = 1.0
    free_bits: float = 0.0
    warmup_epochs: int = 0
    patience: int | None = None  # early stopping on the held-out images; None: max_epochs exactly
    batch_size: int = 128
    learning_rate: float = 1e-3
    eval_k: int = 0  # > 0: the importance-weighted bound on the whole test set after training
    final_learning_rate: float | None = None  # None: a constant learning rate; else cosine decay to it
    gated: bool = False  # the gated VAE of Tomczak & Welling's reference code (vae_lib.models)
    ema_decay: float | None = None  # average the weights after each step; the average is scored and kept


def _sweep(**kw) -> Recipe:
    base = {"hidden": (256,), "latent": 32, "seed": 6, "max_epochs": 10}
    return Recipe(**{**base, **kw})


RECIPES: dict[str, Recipe] = {
    # notebook 04's recipe, stored for notebook 05
    "vae_z20": Recipe(hidden=(400,), latent=20, seed=2024, init_seed=0, max_epochs=10, holdout="test"),
    "vae_z2": Recipe(hidden=(400,), latent=2, seed=2025, init_seed=0, max_epochs=5, holdout="test"),
    # notebook 06
    "vae_converged": Recipe(hidden=(300, 300), latent=40, seed=40, max_epochs=400, patience=25, eval_k=5000),
    "sweep_beta0.1": _sweep(beta=0.1),
    "sweep_beta0.3": _sweep(beta=0.3),
    "sweep_beta3": _sweep(beta=3.0),
    "sweep_beta10": _sweep(beta=10.0),
    "sweep_z2": _sweep(latent=2),
    "sweep_z4": _sweep(latent=4),
    "sweep_z8": _sweep(latent=8),
    "sweep_z16": _sweep(latent=16),
    "sweep_z32": _sweep(latent=32),
    "sweep_z64": _sweep(latent=64),
    "sweep_z64_warmup": _sweep(latent=64, warmup_epochs=5),
    "sweep_z64_freebits": _sweep(latent=64, free_bits=0.25),
    # issue #25, notebook 06b section 3: each recipe adds changes to the one before. The stored cosine model was trained
    # by the script this recipe was written from (artifacts/c25/trial.py: the same settings; not retrained here, so its
    # last bits may differ from this module's) and scored by evaluate_test; the other three were made by make().
    "vae_converged_cosine": Recipe(
        hidden=(300, 300), latent=40, seed=40, max_epochs=300, warmup_epochs=30, final_learning_rate=1e-5, eval_k=5000
    ),
}
RECIPES["vae_converged_gated"] = replace(RECIPES["vae_converged_cosine"], gated=True, ema_decay=0.999)
# the gated recipe trained twice as long, without the average (at the end it scores like the raw weights: 06b)
RECIPES["vae_converged_long"] = replace(RECIPES["vae_converged_gated"], max_epochs=600, ema_decay=None)
RECIPES["vae_converged_long_seed41"] = replace(RECIPES["vae_converged_long"], seed=41)


def recipe(name: str) -> Recipe:
    """The recipe called `name`; a ValueError lists the names when there is none."""
    if name not in RECIPES:
        raise ValueError(f"No stored model called {name!r}; the recipes are {sorted(RECIPES)}.")
    return RECIPES[name]


def build(name: str) -> models.VAE:
    """An untrained VAE with recipe `name`'s sizes and initialisation."""
    r = recipe(name)
    seed = r.seed if r.init_seed is None else r.init_seed
    return models.VAE(hidden=r.hidden, latent=r.latent, gated=r.gated, rngs=nnx.Rngs(seed))


def learning_rate(r: Recipe, steps_per_epoch: int) -> float | optax.Schedule:
    """Adam's step size for recipe `r`.

    Args:
      r: the recipe; steps_per_epoch: optimizer steps in one epoch.

    Returns:
      ``r.learning_rate``, or with ``r.final_learning_rate`` a cosine decay from it to that at step
      ``r.max_epochs * steps_per_epoch`` (``optax.cosine_decay_schedule``; a shorter run keeps it).
    """
    if r.final_learning_rate is None:
        return r.learning_rate
    steps, alpha = r.max_epochs * steps_per_epoch, r.final_learning_rate / r.learning_rate
    return optax.cosine_decay_schedule(r.learning_rate, steps, alpha=alpha)


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


def _schedule(r: Recipe) -> Callable[[int], training.LossFn]:
    """Epoch -> training loss. One function object per (beta, free bits), since the loss is a
    static part of the train state: a new object every epoch would compile the epoch again."""

    plain = r.beta == 1.0 and r.free_bits == 0.0 and not r.warmup_epochs

    @functools.cache
    def loss_for(beta: float) -> training.LossFn:
        if plain:  # otherwise every epoch records the objective beside the true loss (train_objective)
            return losses.vae_loss
        return functools.partial(losses.beta_vae_loss, beta=beta, free_bits=r.free_bits)

    return lambda epoch: loss_for(_beta(r, epoch))


class _EpochEnd:
    """fit's ``on_epoch_end`` for a recipe: beta and the best epoch in the history, the best
    parameters kept (the averaged ones with ``ema_decay``), early stopping, a resume file and a
    progress line per epoch."""

    def __init__(
        self, name: str, r: Recipe, best, resume: Path | None, log: Callable[[str], None], epochs: int, holdout
    ):
        self.name, self.r, self.best, self.resume, self.log, self.epochs = name, r, best, resume, log, epochs
        self.holdout, self.prefix = holdout, "test" if r.holdout == "test" else "valid"
        self.key = f"{self.prefix}_loss"
        self.t0 = time.perf_counter()

    def stop_now(self, epoch: int, history: dict) -> bool:
        best = history.get("best_epoch")
        return self.r.patience is not None and best is not None and epoch - best >= self.r.patience

    def __call__(self, epoch: int, state: training.TrainState, history: dict) -> bool:
        history.setdefault("beta", []).append(_beta(self.r, epoch))
        scores, params = history[self.key], state.params
        if self.r.ema_decay is not None:  # the averaged weights replace the raw ones' held-out scores
            params = training.averaged_params(state)
            ema = evaluation.evaluate(
                nnx.merge(state.graphdef, params), self.holdout, jax.random.key(EMA_VALIDATION_SEED)
            )
            history.setdefault(f"{self.key}_raw", []).append(scores[-1])
            for metric, value in ema.items():
                history[f"{self.prefix}_{metric}"][-1] = value
        first = min(self.r.warmup_epochs, self.epochs)  # the first epoch that may be the best
        keep_last = self.r.patience is None and not self.r.warmup_epochs
        if keep_last or (epoch >= first and scores[-1] < min(scores[max(first, 1) - 1 : -1], default=np.inf)):
            self.best, history["best_epoch"] = jax.tree.map(jnp.copy, params), epoch  # the next epoch donates
        stop = self.stop_now(epoch, history) and epoch < self.epochs
        history["stopped"] = "early" if stop else "max_epochs"
        if self.resume is not None:
            info = {"recipe": asdict(self.r), "history": history}
            checkpoint.save_tree(self.resume, (state, self.best), info=info)
        b = history.get("best_epoch")
        self.log(
            f"{self.name} epoch {epoch}/{self.epochs}: train {history['train_loss'][-1]:.2f}, "
            f"held-out -ELBO {scores[-1]:.2f} ({f'best {scores[b - 1]:.2f} at epoch {b}' if b else 'warming up'}), "
            f"{time.perf_counter() - self.t0:.1f} s"
        )
        self.t0 = time.perf_counter()
        return stop


def train(
    name: str,
    train_images: np.ndarray,
    holdout_images: np.ndarray,
    *,
    max_epochs: int | None = None,
    resume_folder: str | os.PathLike | None = None,
    fresh: bool = False,
    log: Callable[[str], None] = print,
) -> tuple[models.VAE, dict]:
    """Train recipe `name` with :func:`vae_lib.training.fit`; returns the model (its best
    parameters) and the history.

    Args:
      name: a key of :data:`RECIPES`.
      train_images, holdout_images: uint8 images: the training set and the test set for a
        ``holdout="test"`` recipe, or :func:`split_train_validation`'s two parts.
      max_epochs: overrides the recipe's (for a quick try).
      resume_folder: where the resume file is written after each epoch (None: none is written).
      fresh: ignore an existing resume file.
      log: called with one line of progress per epoch.

    Returns:
      ``(model, history)``: per epoch ``epoch``, ``beta``, ``train_<metric>`` and
      ``test_<metric>`` or ``valid_<metric>`` (the true negative ELBO and its terms);
      ``best_epoch`` and ``stopped`` (``"early"`` or ``"max_epochs"``).
    """
    r = recipe(name)
    epochs = r.max_epochs if max_epochs is None else max_epochs
    model = build(name)
    schedule = _schedule(r)
    tx = optax.adam(learning_rate(r, len(train_images) // r.batch_size))
    tx = tx if r.ema_decay is None else optax.chain(tx, training.ema_of_params(r.ema_decay))
    state = training.create_train_state(model, tx, loss_fn=schedule(1))
    resume = Path(resume_folder) / f"{name}.resume.msgpack" if resume_folder is not None else None
    hook = _EpochEnd(name, r, state.params, resume, log, epochs, holdout_images)
    history: dict = {"epoch": []}
    if resume is not None and resume.is_file() and not fresh:
        (state, hook.best), info = checkpoint.load_tree(resume, (state, state.params))
        if not _same_recipe(info.get("recipe"), r):
            raise ValueError(f"{resume} was written for another recipe than {name!r}'s; start over with fresh=True.")
        history = info["history"]
        log(f"{name}: resuming after epoch {history['epoch'][-1]} from {resume}")
    if not (history["epoch"] and hook.stop_now(history["epoch"][-1], history)):
        history = training.fit(
            model,
            train_images,
            key=jax.random.key(r.seed),
            epochs=epochs,
            batch_size=r.batch_size,
            test_images=holdout_images,
            progress=False,
            loss_fn=losses.vae_loss,
            schedule=schedule,
            eval_name="test" if r.holdout == "test" else "valid",
            on_epoch_end=hook,
            resume=(state, history),
        )
    nnx.update(model, hook.best)
    return model, history


def _jsonable(d: dict) -> dict:
    """A recipe as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(d))


def _same_recipe(stored: dict | None, r: Recipe) -> bool:
    """Whether a resume file was written for recipe `r`; a field it lacks (added since) must be at its default."""
    defaults = {f.name: f.default for f in fields(Recipe)}
    return isinstance(stored, dict) and all(stored.get(k, defaults[k]) == v for k, v in _jsonable(asdict(r)).items())


def evaluate_test(model: models.VAE, test_images: np.ndarray, k: int, log: Callable[[str], None] = print) -> dict:
    """The test set's L_k (k samples per image), each image binarized once with EVAL_BINARIZATION_SEED."""
    x = evaluation.binarize_once(test_images, jax.random.key(EVAL_BINARIZATION_SEED))
    t0 = time.perf_counter()
    step = max(1, len(x) // 20)

    def progress(done: int) -> None:
        if done % step < 50 or done == len(x):
            log(f"  L_{k}: {done}/{len(x)} test images, {time.perf_counter() - t0:.0f} s")

    out = evaluation.log_likelihood_bound(model, x, jax.random.key(EVAL_BINARIZATION_SEED + 1), k, progress=progress)
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


def make(
    name: str,
    out: str | os.PathLike | None = None,
    *,
    max_epochs: int | None = None,
    eval_k: int | None = None,
    fresh: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Train recipe `name` on Fashion-MNIST, score it, and write ``<out>/<name>.msgpack`` (float16).

    Args:
      out: the folder (default :data:`FOLDER`, the stored models; a shorter run, with
        ``max_epochs`` or ``eval_k``, must name another).
      max_epochs, eval_k: override the recipe's, for a quick try.
      fresh: start over instead of resuming (resume files go to ``<out>/resume/``, or
        :data:`RESUME_FOLDER` for the stored models).

    Returns:
      The path written.
    """
    r = recipe(name)
    if out is None and (max_epochs is not None or eval_k is not None):
        raise ValueError("a shorter run (max_epochs, eval_k) needs another folder than the stored models' (out=...).")
    folder = FOLDER if out is None else Path(out)
    resume_folder = RESUME_FOLDER if out is None else folder / "resume"
    t0 = time.perf_counter()
    train_all, _ = data.load_fashion_mnist("train")
    test_images, _ = data.load_fashion_mnist("test")
    if r.holdout == "test":
        train_images, holdout = train_all, test_images
    else:
        train_images, holdout = split_train_validation(train_all)
    model, history = train(
        name, train_images, holdout, max_epochs=max_epochs, resume_folder=resume_folder, fresh=fresh, log=log
    )
    info = {"recipe": name, **_jsonable(asdict(r)), "history": history, "train_seconds": time.perf_counter() - t0}
    k = r.eval_k if eval_k is None else eval_k
    if k:
        info["evaluation"] = e = evaluate_test(model, test_images, k, log=log)
        log(f"{name}: test -L_{k} = {e['nll']:.2f} ± {e['nll_standard_error']:.2f} nats, -ELBO {e['neg_elbo']:.2f}")
    path = checkpoint.save(folder / f"{name}.msgpack", model, info=info, dtype=np.float16)
    log(f"{name}: wrote {path} ({time.perf_counter() - t0:.0f} s)")
    return path


def load(name: str, folder: str | os.PathLike | None = None) -> tuple[models.VAE, dict]:
    """The stored model `name` (from :data:`FOLDER`, or `folder`) and its ``info`` (``info["history"]``...).

    Raises:
      FileNotFoundError: the file is not there (the message says which command makes it).
      ValueError: the file holds a model of other sizes than the recipe's.
    """
    r = recipe(name)
    path = Path(FOLDER if folder is None else folder) / f"{name}.msgpack"
    if not path.is_file():
        out = "" if folder is None else f" --out {folder}"
        raise FileNotFoundError(
            f"{path.name} not found in {path.parent}. Make it with `python -m vae_lib.cli.train_models {name}{out}`."
        )
    model = checkpoint.load_model(path)
    sizes = (tuple(checkpoint.architecture(model)["hidden"]), model.latent)
    if sizes != (tuple(r.hidden), r.latent) or model.gated != r.gated:
        raise ValueError(
            f"{path.name} holds a {'gated ' * model.gated}model with hidden sizes {sizes[0]} and latent size "
            f"{sizes[1]}, but recipe {name!r} has {'gated, ' * r.gated}{tuple(r.hidden)} and {r.latent}. "
            f"Remake it with `python -m vae_lib.cli.train_models {name}`."
        )
    return model, checkpoint.read_info(path)
