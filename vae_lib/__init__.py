"""vae_lib: the small helper package of the VAE notebook series.

What a student reads is at the top, one module per idea, in the order the notebooks teach it
(each notebook writes the idea in a cell first, checks it against the module, then imports it):

========================  ==============================================================  ========
module                    what it holds                                                   notebook
========================  ==============================================================  ========
``data``                  Fashion-MNIST arrays; images -> model input; batches            01
``models``                the networks: autoencoder, encoder, decoder, VAE (Flax NNX)     01, 02
``holes``                 holes in a code space: prior samples far from every code        01, 05, 06
``objectives``            log-densities, KL, the ELBO, the importance-weighted bound      02, 05
``linear_gaussian``       a latent model solved exactly (posterior, log p(x), ELBO)       02
``losses``                what training minimises: one function per loss or estimator     01-03, 06
``estimators``            score-function and pathwise gradients, their exact variances    03
``training``              the train state, the step, the fused epoch, ``fit``             04
``step_variants``         the same step written other ways, for the speed lesson          04
``cost``                  FLOPs of a step, matmul rates, stored benchmark results         04, 07
``evaluation``            test ELBO; the bound L_k over a whole test set                  01-06
``posterior_diagnostics`` rate, distortion, active units, the aggregate posterior         06
``gaps``                  approximation and amortization gaps                             06
``sharding``              meshes and layouts of arrays over devices                       07
``sharded_training``      the training step on many devices                               07
``distributed``           what each process of a multi-process run does                   07
========================  ==============================================================  ========

Apart from the lesson: ``vae_lib.notebook`` (checks of the numbers the prose states,
exercise checkers, figures, memory), ``vae_lib.store`` (the data set's files, checkpoints, the
stored models) and ``vae_lib.cli`` (the command lines: ``python -m vae_lib.cli.fetch_data``,
``train_models``, ``launch``), which import the library and are never imported by it.
"""

__version__ = "0.2.0"
