"""Per-row sampling for the slot decode loop: each row its own settings and generator.

audiocraft's ``LMModel._sample_next_token`` takes one temperature/top-k/top-p for the batch and
samples from the global RNG. Here every row has its own :class:`Sampling` and its own
``torch.Generator`` seeded from the job seed, so a job's tokens depend only on its logits and
its seed, never on its batch-mates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SEED_MASK = (1 << 63) - 1
"""``torch.Generator.manual_seed`` takes 63-bit seeds (same mask as ``generation.seeding``)."""


@dataclass(frozen=True)
class Sampling:
    """Per-row sampling settings (audiocraft's meaning: top_p > 0 wins over top_k)."""

    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    cfg_coef: float = 3.0


def sample_rows(
    logits: torch.Tensor, sampling: list[Sampling], generators: list[torch.Generator]
) -> torch.Tensor:
    """One token per row and codebook from ``logits`` ``[n, K, card]``, settings per row.

    Temperature, top-k and top-p masks are applied in sorted order for all rows at once; each
    row then draws its uniforms from its own generator (inverse-CDF sampling), so a row's
    tokens depend only on its logits and its seed. ``temperature <= 0`` is greedy, as in
    audiocraft; ``top_k = 1`` is greedy too.
    """
    _, n_q, card = logits.shape
    device = logits.device
    temps = torch.tensor([s.temperature for s in sampling], device=device)
    top_k = torch.tensor([s.top_k for s in sampling], device=device)
    top_p = torch.tensor([s.top_p for s in sampling], device=device)
    greedy = temps <= 0
    scaled = logits / torch.where(greedy, torch.ones_like(temps), temps)[:, None, None]
    probs = torch.softmax(scaled, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)
    ranks = torch.arange(card, device=device)[None, None]
    keep_k = (top_k[:, None, None] <= 0) | (ranks < top_k[:, None, None])
    # audiocraft's top-p: drop a token when the mass before it already exceeds p.
    keep_p = (sorted_probs.cumsum(-1) - sorted_probs) <= top_p[:, None, None]
    keep = torch.where((top_p > 0)[:, None, None], keep_p, keep_k)
    cdf = (sorted_probs * keep).cumsum(-1)
    uniforms = torch.stack([torch.rand(n_q, generator=g, device=device) for g in generators])
    target = uniforms[..., None] * cdf[..., -1:]
    choice = torch.searchsorted(cdf, target, right=True).clamp_(max=card - 1)
    tokens = order.gather(-1, choice)[..., 0]
    return torch.where(greedy[:, None], logits.argmax(dim=-1), tokens)


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A job's own generator (the same seed mask as :mod:`generation.seeding`)."""
    return torch.Generator(device=device).manual_seed(seed & SEED_MASK)
