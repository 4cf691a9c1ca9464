"""vae_lib.latent: the hole metric of notebooks 01 and 05."""

import numpy as np
import pytest

from vae_lib import latent


def _cloud(n=2000, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 2))


def test_one_percent_of_the_codes_are_themselves_in_holes():
    codes = _cloud()
    assert np.mean(latent.in_holes(codes, codes + 1e-9, latent.hole_radius(codes))) < 0.001  # each code is near itself
    nearest_other = np.sort(np.linalg.norm(codes[:, None] - codes[None], axis=-1), axis=1)[:, 1]
    assert np.mean(nearest_other > latent.hole_radius(codes)) == pytest.approx(0.01, abs=0.002)


def test_points_far_from_every_code_are_holes_and_points_among_them_are_not():
    codes = _cloud()
    far = np.array([[10.0, 10.0], [-8.0, 0.0]])
    near = np.array([[0.0, 0.0], [0.1, -0.1]])
    assert latent.in_holes(codes, far).all()
    assert not latent.in_holes(codes, near).any()


def test_a_cloud_with_an_empty_middle_has_a_hole_there():
    codes = _cloud()
    ring = codes[np.linalg.norm(codes, axis=1) > 1.5]
    assert latent.in_holes(ring, np.zeros((1, 2)))[0]


def test_bad_input_is_refused_with_the_expected_shape():
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        latent.hole_radius(np.zeros(5))
    with pytest.raises(ValueError, match="the codes have 2 dimensions"):
        latent.in_holes(_cloud(), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="finite"):
        latent.in_holes(_cloud(), np.array([[np.nan, 0.0]]))
