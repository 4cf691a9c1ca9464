"""vae_lib.notebook.plotting: figures refuse pixels they would have to guess about."""

import numpy as np
import pytest

from vae_lib.notebook import plotting


def _grey(n=4):
    return np.random.default_rng(0).uniform(0, 1, (n, 784)).astype(np.float32)


def test_plotting_rejects_pixels_outside_the_unit_interval_instead_of_guessing():
    with pytest.raises(ValueError, match=r"plotting expects uint8 pixels or floats in \[0, 1\]"):
        plotting.tile(_grey() * 2, ncols=2)
