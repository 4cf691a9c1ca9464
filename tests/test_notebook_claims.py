"""vae_lib.notebook.claims: the checks behind every number a notebook's prose states."""

import numpy as np
import pytest

from vae_lib.notebook import claims


def test_expect_passes_within_tolerance_and_prints_only_the_stated_numbers(capsys):
    assert claims.expect("test -ELBO (nats)", np.float32(243.97), 243.2, tol=1.5) is None  # a cell shows no Out[]
    assert capsys.readouterr().out == "test -ELBO (nats): 243.2 ± 1.5 as stated\n"


def test_expect_output_is_the_same_for_any_value_inside_the_tolerance(capsys):
    for v in (241.7, 243.2, 244.7):
        claims.expect("x", v, 243.2, tol=1.5)
    lines = capsys.readouterr().out.splitlines()
    assert len(set(lines)) == 1


def test_expect_fails_outside_tolerance_naming_the_claim_and_both_numbers():
    with pytest.raises(claims.ClaimError, match=r"test -ELBO \(nats\): computed 245\.8.*states 243\.2 ± 1\.5"):
        claims.expect("test -ELBO (nats)", 245.8, 243.2, tol=1.5)


def test_expect_fails_below_as_well_as_above():
    with pytest.raises(claims.ClaimError):
        claims.expect("x", 1.0, 2.0, tol=0.5)


def test_expect_rejects_nan_and_infinity():
    for bad in (float("nan"), float("inf"), -np.inf):
        with pytest.raises(claims.ClaimError, match="not a finite number"):
            claims.expect("x", bad, 0.0, tol=1e9)


def test_expect_accepts_a_one_element_array_and_rejects_a_longer_one():
    claims.expect("x", np.array([[2.0]]), 2.0, tol=0.0)
    with pytest.raises(ValueError, match="one number"):
        claims.expect("x", np.array([1.0, 2.0]), 1.5, tol=1.0)


def test_expect_rejects_a_negative_tolerance():
    with pytest.raises(ValueError, match="tolerance"):
        claims.expect("x", 1.0, 1.0, tol=-0.1)


def test_expect_between_checks_both_ends(capsys):
    claims.expect_between("KL (nats)", 19.6, 15, 25)
    assert capsys.readouterr().out == "KL (nats): between 15 and 25 as stated\n"
    for v in (14.9, 25.1, float("nan")):
        with pytest.raises(claims.ClaimError, match="KL"):
            claims.expect_between("KL (nats)", v, 15, 25)


def test_expect_between_rejects_an_empty_range():
    with pytest.raises(ValueError, match="empty"):
        claims.expect_between("x", 1.0, 2.0, 1.0)


def test_expect_true_prints_holds_or_raises(capsys):
    claims.expect_true("losses fall every epoch", np.diff([3.0, 2.0, 1.0]) < 0)
    assert capsys.readouterr().out == "losses fall every epoch: holds\n"
    with pytest.raises(claims.ClaimError, match="losses fall every epoch"):
        claims.expect_true("losses fall every epoch", np.diff([3.0, 2.0, 2.5]) < 0)


def test_claim_error_is_an_assertion_error_so_nbval_reports_it_as_a_failure():
    assert issubclass(claims.ClaimError, AssertionError)


def test_every_check_appends_its_computed_value_to_the_log_file_when_asked(tmp_path, monkeypatch, capsys):
    import json

    log = tmp_path / "claims.jsonl"
    monkeypatch.setenv("VAE_LIB_CLAIMS_LOG", str(log))
    claims.expect("a", 1.25, 1.0, tol=0.5)
    claims.expect_between("b", 3.0, 2.0, 4.0)
    claims.expect_true("c", True)
    with pytest.raises(claims.ClaimError):
        claims.expect("d", 9.0, 1.0, tol=0.5)  # a failing claim is logged too
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["what"], r["value"]) for r in rows] == [("a", 1.25), ("b", 3.0), ("c", 1.0), ("d", 9.0)]
    assert rows[0]["stated"] == 1.0 and rows[0]["tol"] == 0.5 and rows[1]["low"] == 2.0


def test_nothing_is_written_without_the_log_variable(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("VAE_LIB_CLAIMS_LOG", raising=False)
    monkeypatch.chdir(tmp_path)
    claims.expect("a", 1.0, 1.0, tol=0.0)
    assert list(tmp_path.iterdir()) == []
