"""vae_lib: the small helper package of the VAE notebook series.

One concept per module: ``data`` (Fashion-MNIST and batching), ``models`` (Flax NNX
networks), ``objectives`` (log-densities, KL, ELBO, importance-weighted bound),
``linear_gaussian`` (an exactly solvable latent model), ``training`` (jitted Optax steps),
``plotting`` (figures), ``exercises`` (check functions for the notebooks' exercises).
"""

__version__ = "0.1.0"
