"""Command lines, each ``python -m vae_lib.cli.<name>``; they import the library, never the reverse.

``fetch_data`` (``make data``: Fashion-MNIST onto this machine), ``train_models``
(``make models``: the stored models again), ``launch`` (``make distributed``: a multi-process run).
"""
