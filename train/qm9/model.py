"""The served QM9 model: torchmd-net's Equivariant Transformer on a per-element reference.

`build_et` makes torchmd-net's own `TorchMD_Net` (ET representation + scalar head) from the model
config; `EnergyModel` wraps it for export so that one scripted module gives total U0 and forces.

torchmd-net finds neighbours with a warp kernel (`torch.ops.torchmdnet.warp_neighbor_*`), which
a scripted model can only run where torchmd-net and warp-lang (390 MB) are installed, and whose
launch costs milliseconds per call on a CPU. `NeighborPairs` gives the same pairs in plain torch
ops; `build_et` puts it in the ET's place, so the scripted model needs torch alone.
"""

from typing import Optional

import torch
from torch import Tensor, nn
from torchmdnet.models.model import create_model


def build_et(
    embedding_dimension: int = 128,
    num_layers: int = 4,
    num_rbf: int = 32,
    num_heads: int = 8,
    cutoff_upper: float = 5.0,
    max_num_neighbors: int = 32,
    max_z: int = 10,
    rbf_type: str = "expnorm",
    trainable_rbf: bool = False,
    activation: str = "silu",
    attn_activation: str = "silu",
    distance_influence: str = "both",
    neighbor_embedding: bool = True,
    reduce_op: str = "add",
    in_dim: Optional[int] = None,
    num_classes: int = 1,
) -> nn.Module:
    """torchmd-net's ET with a scalar output per molecule (`create_model` with our arguments).

    `in_dim` and `num_classes` are the generic model-config arguments every experiment accepts:
    the ET embeds atomic numbers (in_dim is unused) and predicts one energy (num_classes == 1).
    """
    if num_classes != 1:
        raise ValueError(f"the ET energy model predicts one value, not {num_classes}")
    args = {
        "model": "equivariant-transformer",
        "embedding_dimension": embedding_dimension,
        "num_layers": num_layers,
        "num_rbf": num_rbf,
        "rbf_type": rbf_type,
        "trainable_rbf": trainable_rbf,
        "activation": activation,
        "attn_activation": attn_activation,
        "num_heads": num_heads,
        "distance_influence": distance_influence,
        "neighbor_embedding": neighbor_embedding,
        "cutoff_lower": 0.0,
        "cutoff_upper": cutoff_upper,
        "max_z": max_z,
        "max_num_neighbors": max_num_neighbors,
        "precision": 32,
        "derivative": False,  # EnergyModel takes the gradient itself, only when asked
        "atom_filter": -1,
        "prior_model": None,
        "output_model": "Scalar",
        "reduce_op": reduce_op,
    }
    net = create_model(args)
    rep = net.representation_model
    rep.distance = NeighborPairs(rep.distance.cutoff_lower, rep.distance.cutoff_upper)
    return net


class NeighborPairs(nn.Module):
    """torchmd-net's `OptimizedDistance` as the ET configures it, in plain torch ops.

    Same pairs as its brute-force kernel with loop=True, include_transpose=True and
    resize_to_fit=True: every (i, i) once with a zero vector, and every i != j of one molecule
    with cutoff_lower <= |pos_i - pos_j| < cutoff_upper as (i, j) and (j, i). The order of the
    pairs differs (the kernel's is nondeterministic anyway). Distances of self pairs are 0 with a
    zero gradient, like the kernel's backward. O(N^2) pairs per batch, for small molecules.
    `box` is kept as a buffer so that state dicts saved with the original module load as is.
    """

    def __init__(self, cutoff_lower: float, cutoff_upper: float) -> None:
        super().__init__()
        self.cutoff_lower = float(cutoff_lower)
        self.cutoff_upper = float(cutoff_upper)
        self.register_buffer("box", torch.zeros(3, 3), persistent=True)

    def forward(
        self, pos: Tensor, batch: Optional[Tensor] = None, box: Optional[Tensor] = None
    ) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        if box is not None:
            raise ValueError("NeighborPairs has no periodic boundary conditions")
        n = pos.size(0)
        if batch is None:
            batch = torch.zeros(n, dtype=torch.long, device=pos.device)
        ij = torch.tril_indices(n, n, device=pos.device)  # row i >= column j
        ij = ij[:, batch[ij[0]] == batch[ij[1]]]
        vec = pos[ij[0]] - pos[ij[1]]
        d2 = (vec * vec).sum(-1)
        loop = ij[0] == ij[1]
        keep = (d2 < self.cutoff_upper**2) & (loop | (d2 >= self.cutoff_lower**2))
        ij, vec, d2, loop = ij[:, keep], vec[keep], d2[keep], loop[keep]
        dist = torch.where(loop, torch.zeros_like(d2), torch.where(loop, 1.0, d2).sqrt())
        pair = ~loop
        edge_index = torch.cat([ij, ij[:, pair].flip(0)], dim=1)
        return edge_index, torch.cat([dist, dist[pair]]), torch.cat([vec, -vec[pair]])


class EnergyModel(nn.Module):
    """Total U0 in eV = sum of per-element references (float64) + the ET's residual.

    forward(z (N,), pos (N, 3) Å, batch (N,), forces) -> (energy (B,) float64 eV,
    forces (N, 3) eV/Å, or an empty tensor when `forces` is False). The reference sum stays in
    float64 because total energies reach -17,000 eV, where float32 steps are 1 meV.
    """

    def __init__(self, net: nn.Module, atomref: Tensor, residual_scale: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("atomref", atomref.to(torch.float64))
        # The ET's output is multiplied by `std` inside TorchMD_Net: the residual's scale.
        self.net.std.fill_(residual_scale)

    def reference(self, z: Tensor, batch: Tensor, num_molecules: int) -> Tensor:
        """(B,) float64: the per-element linear fit of U0 for each molecule."""
        ref = torch.zeros(num_molecules, dtype=torch.float64, device=z.device)
        return ref.index_add(0, batch, self.atomref[z])

    def residual(self, z: Tensor, pos: Tensor, batch: Tensor) -> Tensor:
        """(B,) float32: what the ET learns, U0 minus the reference."""
        return self.net(z, pos, batch)[0].squeeze(-1)

    @torch.jit.export
    def embed(self, z: Tensor, pos: Tensor, batch: Tensor) -> Tensor:
        """(B, H): the ET's atom features averaged per molecule, the drift monitor's embedding
        (the scalar head reads these features)."""
        x = self.net.representation_model(z, pos, batch)[0]  # (N, H)
        num_molecules = int(batch.max()) + 1 if batch.numel() > 0 else 0
        total = torch.zeros(num_molecules, x.size(1), dtype=x.dtype, device=x.device)
        total = total.index_add(0, batch, x)
        counts = torch.bincount(batch, minlength=num_molecules).clamp(min=1).to(x.dtype)
        return total / counts.unsqueeze(-1)

    def forward(self, z: Tensor, pos: Tensor, batch: Tensor, forces: bool) -> tuple[Tensor, Tensor]:
        if forces:
            pos = pos.detach().requires_grad_(True)
        res = self.residual(z, pos, batch)
        energy = self.reference(z, batch, res.size(0)) + res.to(torch.float64)
        if not forces:
            return energy, torch.empty(0)
        grad_outputs: list[Optional[Tensor]] = [torch.ones_like(res)]
        grad = torch.autograd.grad([res], [pos], grad_outputs=grad_outputs)[0]
        assert grad is not None
        return energy, -grad
