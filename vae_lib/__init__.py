"""vae_lib: the small helper package of the VAE notebook series.

One concept per module: ``data`` (Fashion-MNIST and batching), ``models`` (Flax NNX
networks), ``objectives`` (log-densities, KL, ELBO, importance-weighted bound),
``linear_gaussian`` (an exactly solvable latent model), ``estimators`` (score-function and
pathwise gradient estimators), ``training`` (jitted Optax steps), ``checkpoint`` (saving
parameters), ``plotting`` (figures), ``exercises`` (check functions for the notebooks' exercises),
``claims`` (checks of the numbers the notebooks' prose states, within measured tolerances).
"""

__version__ = "0.1.0"
