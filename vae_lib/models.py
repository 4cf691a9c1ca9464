"""The networks of the series, in Flax NNX: an autoencoder, and the VAE's encoder and decoder.

All models work on flattened images: a batch of shape (B, in_features), with
in_features = 28 * 28 = 784 for Fashion-MNIST. Hidden sizes are arguments: an int for
one hidden layer, a tuple for several, 0 or () for none.

``VAE(..., gated=True)`` is the reference recipe of Tomczak & Welling's VampPrior code, which
Norouzi et al. (2020) use for their plain VAE: :class:`GatedDense` hidden layers, He-normal
initialisation of every kernel, and the encoder's log-variance clipped to [-6, 2].
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vae_lib.objectives import reparameterize

__all__ = ["MLP", "VAE", "Autoencoder", "Decoder", "Encoder", "GatedDense", "check_features", "count_params"]

Hidden = int | Sequence[int]  # hidden sizes: an int for one layer, a tuple for several, 0 or () for none
LOGVAR_RANGE = (-6.0, 2.0)  # where a gated encoder clips its log-variance


def _sizes(hidden: Hidden) -> tuple[int, ...]:
    if isinstance(hidden, int):
        return (hidden,) if hidden > 0 else ()
    return tuple(int(h) for h in hidden)


def count_params(module: nnx.Module) -> int:
    """The number of trainable parameters (``nnx.Param`` entries) of a model or sub-module."""
    return sum(p.size for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


def check_features(x: jax.Array, in_features: int, who: str) -> None:
    """Raise a ValueError that names the expected shape when `x` does not fit the model."""
    if x.ndim < 1 or x.shape[-1] != in_features:
        hint = ""
        if x.ndim >= 2 and x.shape[-2:] == (28, 28):
            hint = " It looks like unflattened images: use x.reshape(len(x), -1)."
        raise ValueError(f"{who} expects inputs of shape (batch, {in_features}); got shape {tuple(x.shape)}.{hint}")


class GatedDense(nnx.Module):
    """A gated dense layer, h = (W x + b) * sigmoid(V x + c): the gate is its only nonlinearity."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        self.in_features, self.out_features = in_features, out_features
        he = nnx.initializers.he_normal()
        self.h = nnx.Linear(in_features, out_features, kernel_init=he, rngs=rngs)
        self.g = nnx.Linear(in_features, out_features, kernel_init=he, rngs=rngs)

    def __call__(self, x):
        return self.h(x) * jax.nn.sigmoid(self.g(x))


class MLP(nnx.Module):
    """Dense layers with ReLU between them (none after the last; after every one with ``activate_last``).

    ``gated=True``: a :class:`GatedDense` replaces each Dense + ReLU, and the last layer, when
    not activated, is a Dense layer with He-normal initialisation.
    """

    def __init__(self, sizes: Sequence[int], *, gated: bool = False, activate_last: bool = False, rngs: nnx.Rngs):
        self.activated = len(sizes) - 1 if activate_last else len(sizes) - 2  # layers followed by a nonlinearity
        self.gated = gated
        init = {"kernel_init": nnx.initializers.he_normal()} if gated else {}
        self.layers = nnx.List(
            [
                GatedDense(a, b, rngs=rngs) if gated and i < self.activated else nnx.Linear(a, b, **init, rngs=rngs)
                for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False))
            ]
        )

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.activated and not self.gated:
                x = nnx.relu(x)
        return x


class Autoencoder(nnx.Module):
    """A deterministic autoencoder (lecture note, sec. 1.1): x -> code -> logits of x.

    With ``hidden=()`` it is the note's model: the code is the one hidden layer. The
    decoder returns logits; ``jax.nn.sigmoid`` of them is the reconstructed image.
    """

    def __init__(self, in_features: int = 784, hidden: Hidden = 256, latent: int = 32, *, rngs: nnx.Rngs):
        h = _sizes(hidden)
        self.in_features = in_features
        self.latent = latent
        self.encoder = MLP((in_features, *h, latent), rngs=rngs)
        self.decoder = MLP((latent, *reversed(h), in_features), rngs=rngs)

    def encode(self, x):
        check_features(x, self.in_features, "Autoencoder")
        return self.encoder(x)

    def decode(self, code):
        return self.decoder(code)

    def __call__(self, x):
        return self.decode(self.encode(x))


class Encoder(nnx.Module):
    """Inference network: x -> (mean, log-variance) of the diagonal Gaussian q_phi(z|x).

    ``gated=True``: gated hidden layers, He-normal kernels, log-variance clipped to LOGVAR_RANGE.
    """

    def __init__(
        self, in_features: int = 784, hidden: Hidden = 400, latent: int = 20, *, gated: bool = False, rngs: nnx.Rngs
    ):
        h = _sizes(hidden)
        self.in_features, self.gated = in_features, gated
        self.body = MLP((in_features, *h), gated=gated, activate_last=True, rngs=rngs) if h else None
        width = h[-1] if h else in_features
        init = {"kernel_init": nnx.initializers.he_normal()} if gated else {}
        self.mean = nnx.Linear(width, latent, **init, rngs=rngs)
        self.logvar = nnx.Linear(width, latent, **init, rngs=rngs)

    def __call__(self, x):
        check_features(x, self.in_features, "Encoder")
        hid = self.body(x) if self.body is not None else x
        logvar = self.logvar(hid)
        return self.mean(hid), jnp.clip(logvar, *LOGVAR_RANGE) if self.gated else logvar


class Decoder(nnx.Module):
    """Generative network: z -> logits of the Bernoulli likelihood p_theta(x|z)."""

    def __init__(
        self, latent: int = 20, hidden: Hidden = 400, out_features: int = 784, *, gated: bool = False, rngs: nnx.Rngs
    ):
        self.latent = latent
        self.net = MLP((latent, *reversed(_sizes(hidden)), out_features), gated=gated, rngs=rngs)

    def __call__(self, z):
        check_features(z, self.latent, "Decoder")
        return self.net(z)


class VAE(nnx.Module):
    """Variational autoencoder: prior p(z) = N(0, I), encoder q_phi(z|x), decoder p_theta(x|z).

    ``model(x, key)`` returns ``(logits, z, mean, logvar)``: one reparameterized sample
    z ~ q_phi(z|x) (the note's eqs. 20-21) and the decoder's Bernoulli logits at it.
    ``gated=True`` builds the reference recipe (this module's docstring) instead of ReLU layers.
    """

    def __init__(
        self, in_features: int = 784, hidden: Hidden = 400, latent: int = 20, *, gated: bool = False, rngs: nnx.Rngs
    ):
        self.in_features, self.latent, self.gated = in_features, latent, gated
        self.encoder = Encoder(in_features, hidden, latent, gated=gated, rngs=rngs)
        self.decoder = Decoder(latent, hidden, in_features, gated=gated, rngs=rngs)

    def __call__(self, x, key):
        mean, logvar = self.encoder(x)
        z = reparameterize(key, mean, logvar)
        return self.decoder(z), z, mean, logvar

    def sample(self, key, num: int):
        """Images drawn through the prior: z ~ N(0, I), returned as Bernoulli means (num, D)."""
        z = jax.random.normal(key, (num, self.latent))
        return jax.nn.sigmoid(self.decoder(z))

    def reconstruct(self, x):
        """Bernoulli means decoded at the posterior mean: for pictures, not for the ELBO."""
        mean, _ = self.encoder(x)
        return jax.nn.sigmoid(self.decoder(mean))

    def decode(self, z):
        """Bernoulli means (pixel probabilities) at latent points z of shape (..., latent)."""
        return jax.nn.sigmoid(self.decoder(jnp.asarray(z)))
