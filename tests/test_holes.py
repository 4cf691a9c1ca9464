"""vae_lib.holes: the hole metric of notebooks 01 and 05."""

import numpy as np
import pytest

from vae_lib import holes


def _cloud(n=2000, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 2))


def test_one_percent_of_the_codes_are_themselves_in_holes():
    codes = _cloud()
    assert np.mean(holes.in_holes(codes, codes + 1e-9, holes.hole_radius(codes))) < 0.001  # each code is near itself
    nearest_other = np.sort(np.linalg.norm(codes[:, None] - codes[None], axis=-1), axis=1)[:, 1]
    assert np.mean(nearest_other > holes.hole_radius(codes)) == pytest.approx(0.01, abs=0.002)


def test_points_far_from_every_code_are_holes_and_points_among_them_are_not():
    codes = _cloud()
    far = np.array([[10.0, 10.0], [-8.0, 0.0]])
    near = np.array([[0.0, 0.0], [0.1, -0.1]])
    assert holes.in_holes(codes, far).all()
    assert not holes.in_holes(codes, near).any()


def test_a_cloud_with_an_empty_middle_has_a_hole_there():
    codes = _cloud()
    ring = codes[np.linalg.norm(codes, axis=1) > 1.5]
    assert holes.in_holes(ring, np.zeros((1, 2)))[0]


def test_codes_that_are_not_a_matrix_are_refused_naming_the_expected_shape():
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        holes.hole_radius(np.zeros(5))


def test_points_of_another_dimension_than_the_codes_are_refused():
    with pytest.raises(ValueError, match="the codes have 2 dimensions"):
        holes.in_holes(_cloud(), np.zeros((3, 3)))


def test_points_that_are_not_finite_are_refused():
    with pytest.raises(ValueError, match="finite"):
        holes.in_holes(_cloud(), np.array([[np.nan, 0.0]]))


def test_neighbour_distances_are_each_codes_distance_to_its_nearest_other_code():
    codes = np.array([[0.0, 0.0], [3.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(holes.neighbour_distances(codes), [3.0, 3.0, 4.0])


def test_nearest_code_distance_is_each_points_distance_to_the_closest_code():
    codes = np.array([[0.0, 0.0], [10.0, 0.0]])
    np.testing.assert_allclose(holes.nearest_code_distance(codes, [[1.0, 0.0], [10.0, 2.0]]), [1.0, 2.0])
