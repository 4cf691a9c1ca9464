"""The networks of the series, in Flax NNX: an autoencoder, and the VAE's encoder and decoder.

All models work on flattened images: a batch of shape (B, in_features), with
in_features = 28 * 28 = 784 for Fashion-MNIST. Hidden sizes are arguments: an int for
one hidden layer, a tuple for several, 0 or () for none.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vae_lib.objectives import reparameterize

__all__ = ["MLP", "VAE", "Autoencoder", "Decoder", "Encoder", "check_features", "count_params"]


def _sizes(hidden: int | Sequence[int]) -> tuple[int, ...]:
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


class MLP(nnx.Module):
    """Dense layers with ReLU between them (none after the last)."""

    def __init__(self, sizes: Sequence[int], *, rngs: nnx.Rngs):
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:], strict=False)])

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = nnx.relu(x)
        return x


class Autoencoder(nnx.Module):
    """A deterministic autoencoder (lecture note, sec. 1.1): x -> code -> logits of x.

    With ``hidden=()`` it is the note's model: the code is the one hidden layer. The
    decoder returns logits; ``jax.nn.sigmoid`` of them is the reconstructed image.
    """

    def __init__(self, in_features: int = 784, hidden: int | Sequence[int] = 256, latent: int = 32, *, rngs: nnx.Rngs):
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
    """Inference network: x -> (mean, log-variance) of the diagonal Gaussian q_phi(z|x)."""

    def __init__(self, in_features: int = 784, hidden: int | Sequence[int] = 400, latent: int = 20, *, rngs: nnx.Rngs):
        h = _sizes(hidden)
        self.in_features = in_features
        self.body = MLP((in_features, *h), rngs=rngs) if h else None
        width = h[-1] if h else in_features
        self.mean = nnx.Linear(width, latent, rngs=rngs)
        self.logvar = nnx.Linear(width, latent, rngs=rngs)

    def __call__(self, x):
        check_features(x, self.in_features, "Encoder")
        hid = nnx.relu(self.body(x)) if self.body is not None else x
        return self.mean(hid), self.logvar(hid)


class Decoder(nnx.Module):
    """Generative network: z -> logits of the Bernoulli likelihood p_theta(x|z)."""

    def __init__(self, latent: int = 20, hidden: int | Sequence[int] = 400, out_features: int = 784, *, rngs: nnx.Rngs):
        self.latent = latent
        self.net = MLP((latent, *reversed(_sizes(hidden)), out_features), rngs=rngs)

    def __call__(self, z):
        check_features(z, self.latent, "Decoder")
        return self.net(z)


class VAE(nnx.Module):
    """Variational autoencoder: prior p(z) = N(0, I), encoder q_phi(z|x), decoder p_theta(x|z).

    ``model(x, key)`` returns ``(logits, z, mean, logvar)``: one reparameterized sample
    z ~ q_phi(z|x) (the note's eqs. 20-21) and the decoder's Bernoulli logits at it.
    """

    def __init__(self, in_features: int = 784, hidden: int | Sequence[int] = 400, latent: int = 20, *, rngs: nnx.Rngs):
        self.in_features = in_features
        self.latent = latent
        self.encoder = Encoder(in_features, hidden, latent, rngs=rngs)
        self.decoder = Decoder(latent, hidden, in_features, rngs=rngs)

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
