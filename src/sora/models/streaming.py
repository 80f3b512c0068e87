"""The model contract for models built on one ``run(clip, state)`` (SoraDet, SoraAnomaly):
``forward`` is ``run`` from a fresh state, ``step`` is ``run`` on one frame, so a streamed
frame equals the offline output at that frame by construction."""

from __future__ import annotations

import torch

State = dict[str, torch.Tensor]
Outputs = dict[str, torch.Tensor]


class RunStreaming:
    """Mixed into an ``nn.Module`` that defines ``run(clip (B, T, 3, H, W), state | None) ->
    (outputs with a T axis, state)`` and ``_check(x, rank, name)`` (its input checks)."""

    def forward(self, clip: torch.Tensor) -> Outputs:
        """Offline: ``(B, T, 3, H, W)`` -> outputs with a ``T`` axis, from a fresh state."""
        return self.run(clip)[0]

    @property
    def streamable(self) -> bool:
        return True

    def step(self, frame: torch.Tensor, state: State) -> tuple[Outputs, State]:
        """One frame ``(B, 3, H, W)`` -> outputs without the ``T`` axis, and the new state."""
        self._check(frame, 4, "frame")
        out, state = self.run(frame.unsqueeze(1), state)
        return {k: v[:, 0] for k, v in out.items()}, state
