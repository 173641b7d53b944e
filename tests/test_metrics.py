"""The rank and norm metrics of reglab.metrics against matrices whose singular values are known, one set per
ensemble member."""
import math

import torch

from reglab.metrics import effective_rank, nuclear_norm, numerical_rank, singular_values, stable_rank, weight_norms

SPECTRA = torch.tensor([[4.0, 2.0, 1.0, 0.0, 0.0], [3.0, 3.0, 3.0, 3.0, 3.0]], dtype=torch.float64)


def matrices_with(spectra, rows=7, cols=5, seed=0):
    """[M, rows, cols] matrices U diag(s) Vᵀ with random orthonormal U, V: singular values exactly s."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in spectra:
        U, _ = torch.linalg.qr(torch.randn(rows, cols, generator=g, dtype=torch.float64))
        V, _ = torch.linalg.qr(torch.randn(cols, cols, generator=g, dtype=torch.float64))
        out.append(U @ torch.diag(s) @ V.T)
    return torch.stack(out)


def test_rank_metrics_match_their_definitions_per_member():
    W = matrices_with(SPECTRA)
    assert torch.allclose(singular_values(W), SPECTRA, atol=1e-10)
    # stable rank ‖W‖_F² / ‖W‖_2²: (16 + 4 + 1) / 16, and 5 for a flat spectrum
    assert torch.allclose(stable_rank(W), torch.tensor([21 / 16, 5.0], dtype=torch.float64))
    # effective rank exp(entropy of σ/Σσ): p = (4, 2, 1)/7 for the first member, uniform over 5 for the second
    p = torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64) / 7
    assert torch.allclose(effective_rank(W), torch.stack([torch.exp(-(p * p.log()).sum()),
                                                         torch.tensor(5.0, dtype=torch.float64)]))
    assert torch.allclose(nuclear_norm(W), torch.tensor([7.0, 15.0], dtype=torch.float64))
    # 99 % of Σσ² = 21 needs all three non-zero values (16 + 4 = 20 is 95 %); 90 % needs two
    assert numerical_rank(W).tolist() == [3, 5]
    assert numerical_rank(W, energy=0.9).tolist() == [2, 5]


def test_rank_metrics_are_scale_free_and_see_a_rank_one_matrix():
    W = matrices_with(SPECTRA)
    assert torch.allclose(stable_rank(10 * W), stable_rank(W))
    assert torch.allclose(effective_rank(10 * W), effective_rank(W))
    one = matrices_with(torch.tensor([[2.0, 0, 0, 0, 0]], dtype=torch.float64))
    assert math.isclose(float(stable_rank(one)[0]), 1.0, abs_tol=1e-9)
    assert math.isclose(float(effective_rank(one)[0]), 1.0, abs_tol=1e-9)
    assert numerical_rank(one).tolist() == [1]


def test_weight_norms_are_each_members_frobenius_norm():
    params = {"W0": matrices_with(SPECTRA), "b0": torch.tensor([[3.0, 4.0], [0.0, 1.0]])}
    norms = weight_norms(params)
    assert torch.allclose(norms["W0"], SPECTRA.pow(2).sum(-1).sqrt())
    assert torch.allclose(norms["b0"], torch.tensor([5.0, 1.0]))
