"""vae_lib: the small helper package of the VAE notebook series.

One concept per module: ``data`` (reading Fashion-MNIST, turning images into model
input, batches), ``fetch`` (getting the data: Debian package, tensorflow-datasets),
``models`` (Flax NNX networks), ``objectives`` (log-densities, KL, ELBO, importance-weighted
bound), ``linear_gaussian`` (an exactly solvable latent model), ``losses`` (the training
losses), ``estimators`` (score-function and pathwise gradient estimators), ``training`` (the
plain and the fused training loops, ``fit``), ``step_variants`` (the step written several
ways), ``evaluation`` (test ELBO; L_k over a test set), ``latent`` (holes in a 2-D code
space), ``posterior_diagnostics`` (rate, distortion, active units, the aggregate posterior),
``gaps`` (approximation and amortization gaps), ``sharding`` and ``sharded_training`` (meshes,
layouts, the step on many devices), ``distributed`` (many processes), ``cost`` (FLOPs,
matmul rates, the stored benchmark results), ``memory`` (releasing compiled programs),
``checkpoint`` (saving parameters), ``pretrained`` (the two stored VAEs: their recipes,
loading them, the command that retrains them), ``pretrain`` (notebook 06's models: early
stopping on a validation split, resumable runs), ``plotting`` (figures), ``exercises`` (check
functions for the notebooks' exercises), ``claims`` (checks of the numbers the notebooks'
prose states, within measured tolerances). The README's Layout section says which notebook
teaches each.
"""

__version__ = "0.1.0"
