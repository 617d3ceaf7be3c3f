"""The drift tests on tiny synthetic profiles: a shifted window is flagged, a clean one is not."""

import numpy as np
import pytest
import torch

from monitor.drift import DriftDetector, flagged
from monitor.reference import Reference, to_arrays

LABELS = ["a", "b", "c"]


def records(rng: np.random.Generator, n: int, shift: float = 0.0, labels=(0.6, 0.3, 0.1)):
    """Payload-shaped records: two scalar stats, a 4-d vector stat, an 8-d embedding, a label."""
    return [
        {
            "stats": {
                "nodes": float(rng.poisson(20 + 10 * shift)),
                "brightness": float(rng.normal(0.5 - 0.2 * shift, 0.1)),
                "mix": list(rng.dirichlet([4.0, 2.0, 1.0, 1.0])),
            },
            "embedding": list(rng.normal(shift, 1.0, 8)),
            "prediction": int(rng.choice(3, p=labels)),
        }
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference.from_records("toy", records(np.random.default_rng(0), 300), LABELS)


def test_reference_round_trip(reference, tmp_path):
    reference.save(tmp_path)
    back = Reference.load(tmp_path / "reference.json")
    assert back.labels == LABELS and back.signals == reference.signals
    for name in reference.signals:
        np.testing.assert_array_equal(back.samples[name], reference.samples[name])
    assert back.kind("prediction") == "label" and back.kind("mix") == "vector"
    assert back.kind("nodes") == "scalar" and back.samples["embedding"].shape == (300, 8)


def test_node_requests_flatten_their_labels():
    arrays = to_arrays([{"prediction": [0, 2]}, {"prediction": [1]}, {"stats": {"x": 1.0}}])
    assert arrays["prediction"].tolist() == [0, 2, 1] and arrays["x"].tolist() == [1.0]


def test_clean_windows_are_rarely_flagged(reference):
    rng = np.random.default_rng(1)
    detector = DriftDetector(reference, alpha=0.05, n_perm=200)
    alarms = sum(flagged(detector.check(records(rng, 100))) for _ in range(10))
    assert alarms <= 2  # alpha = 0.05: about one in twenty clean windows


def test_a_shifted_window_is_flagged_on_the_shifted_signals(reference):
    detector = DriftDetector(reference, alpha=0.05, n_perm=200)
    signals = {s.name: s for s in detector.check(records(np.random.default_rng(2), 100, 1.0))}
    assert set(signals) == {"nodes", "brightness", "mix", "embedding", "prediction"}
    assert signals["embedding"].drifted and signals["embedding"].test == "mmd"
    assert signals["nodes"].drifted and signals["brightness"].drifted
    assert not signals["mix"].drifted  # unchanged by the shift
    assert all(s.threshold == pytest.approx(0.05 / 5) for s in signals.values())


def test_a_label_shift_alone_is_flagged(reference):
    detector = DriftDetector(reference, alpha=0.05, n_perm=200)
    rng = np.random.default_rng(3)
    signals = {s.name: s for s in detector.check(records(rng, 150, labels=(0.1, 0.3, 0.6)))}
    assert signals["prediction"].drifted and signals["prediction"].test == "chi2"
    assert not signals["embedding"].drifted


def test_small_windows_and_unknown_signals_are_not_tested(reference):
    detector = DriftDetector(reference, min_samples=20)
    few = records(np.random.default_rng(4), 5)
    assert detector.check(few) == []
    odd = [{"stats": {"other": 1.0}} for _ in range(50)]
    assert detector.check(odd) == []


def test_permutation_mmd_is_torchdrifts_statistic_and_p_value():
    """The vectorised permutations give torchdrift's kernel_mmd statistic exactly, and a p-value
    that agrees with its loop's within permutation noise, on a shifted and an unshifted pair."""
    from torchdrift.detectors.mmd import GaussianKernel, kernel_mmd

    from monitor.drift import permutation_mmd

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(120, 5, generator=gen)
    for shift in (0.0, 0.35):
        y = torch.randn(60, 5, generator=gen) + shift
        torch.manual_seed(1)
        want, want_p = kernel_mmd(x, y, n_perm=2000, kernel=GaussianKernel())
        got, exceed = permutation_mmd(
            x, y, GaussianKernel(), 2000, torch.Generator().manual_seed(2)
        )
        assert got == pytest.approx(float(want), rel=1e-4, abs=1e-7)
        assert exceed / 2000 == pytest.approx(float(want_p), abs=0.04)
