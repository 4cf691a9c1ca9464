"""Files: the data set on disk, saved parameters and the series' stored models.

``fashion_mnist`` (finding, reading, verifying and caching the real Fashion-MNIST),
``checkpoint`` (a model's parameters, or a whole training state, in one msgpack file),
``zoo`` (the recipe of every stored model, how it trains, and loading it from ``models/``).
"""
