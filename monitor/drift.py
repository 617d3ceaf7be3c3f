"""Two-sample drift tests of a window of served records against a model's reference profile.

Each signal gets the test that fits its kind, all from libraries:
- a scalar input statistic (node count, brightness, ...) and a regression prediction (QM9's
  energy per atom): Kolmogorov-Smirnov, `scipy.stats.ks_2samp`;
- a classifier's predicted labels: chi-square test of homogeneity of the reference's and the
  window's label counts, `scipy.stats.chi2_contingency`;
- the embedding and the vector statistics (QM9's element mix and distance histogram): kernel
  MMD with a Gaussian kernel (median heuristic) and a permutation test, `torchdrift`'s
  `kernel_mmd` (Gretton et al., JMLR 2012).

A window is flagged when any signal drifts after a Bonferroni correction: each signal's p-value
is compared with alpha / m for its m tested signals, which keeps the chance that a clean window
is flagged at most alpha. (Holm's step-down rejects at least one signal exactly when Bonferroni
does, so for "is this window drifted" the two agree.)

    detector = DriftDetector(Reference.load("model_store/mutag_gcn.mar"), alpha=0.05)
    signals = detector.check(records)       # records as in the payload log
    flagged = any(s.drifted for s in signals)
"""

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torchdrift.detectors.mmd import GaussianKernel

from monitor.reference import PREDICTION, Reference, to_arrays

__all__ = ["PREDICTION", "DriftDetector", "Reference", "Signal", "flagged", "signal_kinds"]


@dataclass(frozen=True)
class Signal:
    """One signal's test on one window: `drifted` is p_value < threshold (alpha / m)."""

    name: str
    test: str  # "ks", "chi2" or "mmd"
    score: float  # the test statistic: KS distance, chi-square, or MMD^2
    p_value: float
    threshold: float
    drifted: bool
    n: int  # samples of the window


def flagged(signals: list[Signal]) -> bool:
    """Whether the window drifted: some signal is below its corrected threshold."""
    return any(s.drifted for s in signals)


class DriftDetector:
    """Compares windows of payload records with one model's reference profile."""

    def __init__(
        self,
        reference: Reference,
        alpha: float = 0.05,
        n_perm: int = 500,
        min_samples: int = 20,
        seed: int = 0,
    ) -> None:
        """`n_perm` permutations per MMD test (its smallest p-value is 1 / (n_perm + 1), which
        must be below alpha / m); a signal with fewer than `min_samples` in the window is not
        tested."""
        self.reference, self.alpha = reference, alpha
        self.n_perm, self.min_samples, self.seed = n_perm, min_samples, seed

    def check(self, records: list[dict]) -> list[Signal]:
        """Tests every signal that the reference and the window both have; sorted by name."""
        window = to_arrays(records)
        names = [
            name
            for name in self.reference.signals
            if name in window
            and len(window[name]) >= self.min_samples
            and len(self.reference.samples[name]) >= 2
            and window[name].shape[1:] == self.reference.samples[name].shape[1:]
        ]
        if not names:
            return []
        threshold = self.alpha / len(names)  # Bonferroni
        out = []
        for name in names:
            test, score, p = self.test(name, self.reference.samples[name], window[name])
            out.append(Signal(name, test, score, p, threshold, p < threshold, len(window[name])))
        return out

    def test(self, name: str, ref: np.ndarray, cur: np.ndarray) -> tuple[str, float, float]:
        """(test, statistic, p-value) of one signal."""
        kind = self.reference.kind(name)
        if kind == "label":
            return ("chi2", *label_test(ref, cur, len(self.reference.labels or [])))
        if kind == "vector":
            return ("mmd", *self.mmd(ref, cur))
        res = stats.ks_2samp(ref, cur)
        return "ks", float(res.statistic), float(res.pvalue)

    def mmd(self, ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
        """MMD^2 and its permutation p-value, with a seeded generator: one window, one answer."""
        x = torch.as_tensor(ref, dtype=torch.float32)
        y = torch.as_tensor(cur, dtype=torch.float32)
        if float(torch.cdist(torch.cat([x, y]), torch.cat([x, y])).median()) == 0.0:
            # Most points identical (e.g. a one-hot statistic): the median bandwidth is 0 and the
            # kernel undefined, so compare the means with the mean distance as the scale instead.
            kernel = GaussianKernel(lengthscale=max(float(torch.cdist(x, y).mean()), 1e-6))
        else:
            kernel = GaussianKernel()
        gen = torch.Generator().manual_seed(self.seed)
        mmd, exceed = permutation_mmd(x, y, kernel, self.n_perm, gen)
        # Counting the observed statistic as one of the permutations keeps the permutation
        # p-value valid (never 0).
        return mmd, (exceed + 1) / (self.n_perm + 1)


def permutation_mmd(
    x: torch.Tensor, y: torch.Tensor, kernel: GaussianKernel, n_perm: int, gen: torch.Generator
) -> tuple[float, int]:
    """torchdrift's `kernel_mmd` statistic, and how many of `n_perm` random relabellings of the
    pooled samples exceed it.

    Written here because torchdrift's own permutation loop copies the (n+m)^2 kernel matrix
    once per permutation (its comment says it "isn't efficient"): 2 s per test on 700 points.
    With each relabelling as a 0/1 column s of S, the three block sums are s'Ks, (1-s)'K(1-s)
    and s'K(1-s), so one matrix product K @ S gives them all. The statistic is torchdrift's,
    term for term (the diagonal included, as there); `test_drift.py` checks that it matches.
    """
    n, m = len(x), len(y)
    xy = torch.cat([x, y]).double()
    k = kernel(torch.cdist(xy, xy))
    labels = torch.zeros(n + m, n_perm + 1, dtype=torch.float64)
    labels[:n, 0] = 1.0  # column 0: the observed split
    for j in range(1, n_perm + 1):
        labels[torch.randperm(n + m, generator=gen)[:n], j] = 1.0
    ks = k @ labels  # (n+m, P+1)
    total = k.sum()
    in_x = (labels * ks).sum(0)  # s'Ks
    cross = ks.sum(0) - in_x  # 1'Ks - s'Ks = (1-s)'Ks
    in_y = total - 2 * cross - in_x  # (1-s)'K(1-s)
    stat = in_x / (n * (n - 1)) + in_y / (m * (m - 1)) - 2 * cross / (n * m)
    return float(stat[0]), int((stat[1:] > stat[0]).sum())


def label_test(ref: np.ndarray, cur: np.ndarray, num_labels: int) -> tuple[float, float]:
    """Chi-square homogeneity of two label samples; labels neither sample has are left out."""
    minlength = max(num_labels, int(max(ref.max(), cur.max())) + 1)
    table = np.stack(
        [
            np.bincount(ref.astype(int), minlength=minlength),
            np.bincount(cur.astype(int), minlength=minlength),
        ]
    )
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0  # both samples are one and the same label
    res = stats.chi2_contingency(table)
    return float(res.statistic), float(res.pvalue)


def signal_kinds(reference: Reference) -> dict[str, str]:
    """Signal -> its test, for documentation and the report."""
    tests = {"label": "chi2", "vector": "mmd", "scalar": "ks"}
    return {name: tests[reference.kind(name)] for name in reference.signals}
