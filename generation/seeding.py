"""Per-row random generators for audiocraft's sampling, so a seed means the same audio.

audiocraft samples every token with ``torch.multinomial`` on the global RNG
(``audiocraft.utils.utils.multinomial``, reached from ``sample_top_k``/``sample_top_p`` and
``LMModel._sample_next_token``). With one global RNG, a job's audio would depend on which other
jobs shared its batch. :func:`row_generators` gives each batch row its own
``torch.Generator`` seeded from that row's job seed.

The patch is installed once and is inert outside the context manager: the replacement looks
up generators in a thread-local, so another thread (or another engine) sampling at the same
time keeps the original behaviour. Classifier-free guidance doubles the batch only for the
forward pass; the logits are combined before sampling, so probability rows = batch rows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from audiocraft.utils import utils as ac_utils

_local = threading.local()
_install_lock = threading.Lock()
_original_multinomial = ac_utils.multinomial
_SEED_MASK = (1 << 63) - 1


def _multinomial(
    input: torch.Tensor,
    num_samples: int,
    replacement: bool = False,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    generators: list[torch.Generator] | None = getattr(_local, "generators", None)
    if generators is None or generator is not None:
        return _original_multinomial(input, num_samples, replacement, generator=generator)
    if input.shape[0] != len(generators):
        # Never fall back to the shared RNG silently: that would break reproducibility.
        raise RuntimeError(
            f"sampling {input.shape[0]} rows with {len(generators)} seeded generators"
        )
    rows = [
        _original_multinomial(input[i : i + 1], num_samples, replacement, generator=gen)
        for i, gen in enumerate(generators)
    ]
    return torch.cat(rows, dim=0)


def install() -> None:
    """Route audiocraft's sampling through :func:`_multinomial` (idempotent)."""
    with _install_lock:
        if ac_utils.multinomial is not _multinomial:
            ac_utils.multinomial = _multinomial


@contextmanager
def row_generators(seeds: Sequence[int], device: torch.device | str) -> Iterator[None]:
    """Within the block, batch row ``i`` of this thread's sampling draws from ``seeds[i]``."""
    install()
    generators = [torch.Generator(device=device).manual_seed(s & _SEED_MASK) for s in seeds]
    previous = getattr(_local, "generators", None)
    _local.generators = generators
    try:
        yield
    finally:
        _local.generators = previous
