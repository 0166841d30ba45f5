"""fp32 master weights for a model kept in bfloat16 (mixed precision without autocast).

Why: bf16 has 8 significant bits, so a weight of magnitude 0.02 moves in steps of ~8e-5. An AdamW
update at the paper's lr of 1e-6 (|update| ≈ lr) is far below half a step and rounds away: pure-bf16
weights with a bf16 optimizer simply do not train at SFT learning rates. DeepSpeed's bf16 mode and
Megatron keep an fp32 copy of every trainable weight in the optimizer for that reason; this class
does the same for the single-process trainer:

* forward/backward run on the bf16 model (bf16 GEMMs, no per-op autocast casts, half the memory
  traffic of fp32 weights);
* after backward the bf16 grads are moved into fp32 grads of the master copies (the bf16 grads are
  freed as they go), clipping and AdamW run in fp32 on the masters;
* the updated masters are rounded into the bf16 weights with one foreach copy.

The masters are saved with the checkpoint (`state_dict`), so a resumed run continues from the exact
fp32 values, not from their bf16 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class MasterWeights:
    """fp32 master copies of `params` (bf16 model parameters, in optimizer order)."""

    def __init__(self, params: Sequence[Any]):
        import torch

        self.params = list(params)
        self.master = [
            p.detach().to(torch.float32).clone().requires_grad_(True) for p in self.params
        ]

    def grads_to_master(self) -> None:
        """fp32 grads on the masters from the bf16 grads (which are released)."""
        for p, m in zip(self.params, self.master, strict=True):
            m.grad = None if p.grad is None else p.grad.to(m.dtype)
            p.grad = None

    def master_to_model(self) -> None:
        """Round the masters into the model's bf16 weights."""
        import torch

        with torch.no_grad():
            torch._foreach_copy_(self.params, self.master)

    def state_dict(self) -> list[Any]:
        return [m.detach().cpu() for m in self.master]

    def load_state_dict(self, tensors: Sequence[Any]) -> None:
        import torch

        if len(tensors) != len(self.master):
            raise ValueError(
                f"{len(tensors)} master tensors saved, this model has {len(self.master)} "
                f"trainable parameters"
            )
        with torch.no_grad():
            for m, t in zip(self.master, tensors, strict=True):
                if tuple(t.shape) != tuple(m.shape):
                    raise ValueError(
                        f"master weight of shape {tuple(t.shape)} for {tuple(m.shape)}"
                    )
                m.copy_(t)
        self.master_to_model()
