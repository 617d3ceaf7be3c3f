"""QM9 family: U0 energy and forces with torchmd-net's Equivariant Transformer (qm9_et)."""
