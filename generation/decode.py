"""Our own MusicGen decode loop over audiocraft's real modules, one *slot* per job.

audiocraft 1.3's ``LMModel.generate`` decodes a batch that shares one length and one set of
sampling settings, and its streaming attention grows the KV cache with ``torch.cat`` every
step. Here each job is a :class:`Slot` with its own preallocated KV cache, delay-pattern
sequence, position, sampling settings and seeded ``torch.Generator``; :meth:`SlotDecoder.step`
advances any set of slots by one sequence step in one batched forward pass. The weights,
embeddings, norms, feed-forward blocks, conditioners and fuser are audiocraft's own modules;
only the attention bookkeeping and sampling are re-implemented (see ``docs/performance.md``).

Rows: each slot is two batch rows, conditional then unconditional (classifier-free guidance,
as audiocraft's one-pass CFG does). Batch invariance: a job's tokens must not depend on its
batch-mates. Matrix products are row-invariant on the CPU kernels here only from 4 rows up
(measured: 1-3 rows take another code path and differ in the last bits), so a lone slot is
padded to :data:`MIN_ROWS`; attention, which depends on each slot's own length, is computed
per slot; prefills (prompt tokens) run per slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from audiocraft.models import LMModel, MusicGen
from audiocraft.modules.codebooks_patterns import DelayedPatternProvider
from audiocraft.modules.conditioners import ClassifierFreeGuidanceDropout, ConditioningAttributes
from audiocraft.modules.transformer import (
    StreamingMultiheadAttention,
    StreamingTransformerLayer,
    create_sin_embedding,
)
from torch.nn import functional as F

from generation.errors import GenerationError
from generation.sampling import Sampling, make_generator, sample_rows

MIN_ROWS = 4
"""Fewest rows a batched matmul gets: below 4 the CPU GEMM (MKL) rounds differently."""
ONEDNN_LINEAR = True
"""On CPU (float32), run the loop's matrix products with oneDNN instead of MKL's sgemm.

Measured here (1 thread, musicgen-small shapes): 5.6 vs 8.5 ms for 2 rows, 10.3 vs 13.4 ms
for 16 rows; oneDNN rows are bit-identical for any batch of 2 rows or more. Costs a second
copy of the LM weights in oneDNN's layout. Set to False before building a decoder to use
the same kernels as audiocraft (``bench/mixed.py --mkl`` measures the difference).
"""


@dataclass
class CrossKV:
    """Cross-attention keys/values of one job's conditioning, per layer ``[2, H, Tc, Dh]``."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def nbytes(self) -> int:
        """Bytes held by these keys and values."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


class LMSpec:
    """The shape facts of an ``LMModel`` that the loop needs; refuses what it cannot run."""

    def __init__(self, model: MusicGen) -> None:
        lm = model.lm
        _check_supported(model)
        first = _layers(lm)[0].self_attn
        self.layers = len(lm.transformer.layers)
        self.dim = int(first.embed_dim)
        self.heads = int(first.num_heads)
        self.head_dim = self.dim // self.heads
        self.n_q = int(lm.num_codebooks)
        self.card = int(lm.card)
        self.special = int(lm.special_token_id)
        self.delays: list[int] = list(cast(DelayedPatternProvider, lm.pattern_provider).delays)
        self.max_delay = max(self.delays)
        param = next(lm.parameters())
        self.device = param.device
        # audiocraft runs the LM under float16 autocast on CUDA: keys/values come out float16.
        self.dtype = torch.float16 if param.device.type == "cuda" else param.dtype

    def positions(self, frames: int) -> int:
        """Sequence positions one window of ``frames`` feeds (the delay pattern adds steps)."""
        return frames + self.max_delay

    def kv_bytes(self, frames: int) -> int:
        """Self-attention cache bytes of one slot for a window of ``frames`` (CFG: 2 rows)."""
        per_position = self.layers * 2 * self.heads * self.head_dim * _itemsize(self.dtype)
        return per_position * self.positions(frames) * 2


def _layers(lm: LMModel) -> list[StreamingTransformerLayer]:
    """The LM's transformer layers, typed: iterating an ``nn.ModuleList`` gives plain modules."""
    return [cast(StreamingTransformerLayer, layer) for layer in lm.transformer.layers]


def _cross(layer: StreamingTransformerLayer) -> StreamingMultiheadAttention:
    """A layer's cross-attention (``_check_supported`` refuses layers without one)."""
    return cast(StreamingMultiheadAttention, layer.cross_attention)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _check_supported(model: MusicGen) -> None:
    """Raise ``GenerationError`` for LM features this loop does not implement."""
    lm = model.lm
    problems = []
    if lm.training:
        problems.append("the LM is in training mode")
    if lm.transformer.positional_embedding != "sin":
        problems.append(f"{lm.transformer.positional_embedding} positions")
    fuse = lm.fuser.fuse2cond
    if any(fuse.get(op) for op in ("prepend", "sum", "input_interpolate")):
        problems.append("conditions fused other than by cross-attention (melody models)")
    if not hasattr(lm.pattern_provider, "delays"):
        problems.append("a codebook pattern other than delay")
    for layer in _layers(lm):
        attn = layer.self_attn
        if not attn.custom or attn.rope is not None or attn.kv_repeat != 1:
            problems.append("non-custom attention, rope or kv_repeat")
        if attn.qk_layer_norm or attn.past_context is not None:
            problems.append("qk layer norm or limited past context")
        if layer.cross_attention is None or layer.cross_attention.qk_layer_norm:
            problems.append("no (or normalised) cross-attention")
    if problems:
        raise GenerationError(
            "The continuous batcher cannot run this model: " + "; ".join(sorted(set(problems)))
        )


class _Linear:
    """``F.linear`` with one module's weight, through oneDNN when enabled (see ONEDNN_LINEAR)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, onednn: bool) -> None:
        self.out_features = int(weight.shape[0])
        self.onednn = onednn
        if onednn:
            self.weight = weight.detach().contiguous().to_mkldnn()
            self.bias = None if bias is None else bias.detach().contiguous().to_mkldnn()
        else:
            self.weight, self.bias = weight, bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.onednn:
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(-1, x.shape[-1]).contiguous().to_mkldnn()
        out = torch._C._nn.mkldnn_linear(flat, self.weight, self.bias).to_dense()
        return out.view(*x.shape[:-1], self.out_features)


@dataclass
class _LayerLinears:
    """The matrix products of one transformer layer, prepared once."""

    self_in: _Linear
    self_out: _Linear
    cross_q: _Linear
    cross_out: _Linear
    ff1: _Linear
    ff2: _Linear


def _prepare_linears(model: MusicGen, spec: LMSpec) -> tuple[list[_LayerLinears], list[_Linear]]:
    onednn = (ONEDNN_LINEAR and spec.device.type == "cpu" and spec.dtype == torch.float32
              and torch.backends.mkldnn.is_available())
    dim, layers = spec.dim, []
    for layer in _layers(model.lm):
        sa, ca = layer.self_attn, _cross(layer)
        cq_bias = None if ca.in_proj_bias is None else ca.in_proj_bias[:dim]
        layers.append(_LayerLinears(
            _Linear(sa.in_proj_weight, sa.in_proj_bias, onednn),
            _Linear(sa.out_proj.weight, sa.out_proj.bias, onednn),
            _Linear(ca.in_proj_weight[:dim], cq_bias, onednn),
            _Linear(ca.out_proj.weight, ca.out_proj.bias, onednn),
            _Linear(layer.linear1.weight, layer.linear1.bias, onednn),
            _Linear(layer.linear2.weight, layer.linear2.bias, onednn),
        ))
    linears = [cast(torch.nn.Linear, lin) for lin in model.lm.linears]  # a ModuleList
    heads = [_Linear(lin.weight, lin.bias, onednn) for lin in linears]
    return layers, heads


class Slot:
    """One job's decoding state for the current window.

    ``seq`` is the delay-pattern sequence ``[K, S]`` (``S = frames + max_delay + 1``) as
    audiocraft's ``gen_sequence``: step 0 is all special tokens, codebook ``q`` of step ``s``
    holds frame ``s - 1 - delay[q]``. ``pos`` counts the sequence positions fed so far; the
    next step feeds position ``pos`` and predicts step ``pos + 1``.
    """

    # Alike by shape only to other constructors (duplicates): plain assignments, nothing to share.
    def __init__(
        self,
        spec: LMSpec,
        cross: CrossKV,
        sampling: Sampling,
        generator: torch.Generator,
        frames: int,
        prompt: torch.Tensor | None,
        cache: torch.Tensor | None = None,
    ) -> None:
        self.spec = spec
        self.cross = cross
        self.sampling = sampling
        self.generator = generator
        self.frames = frames
        self.prompt_frames = 0 if prompt is None else int(prompt.shape[-1])
        if self.prompt_frames >= frames:
            raise GenerationError("The prompt is as long as the window to generate.")
        positions = spec.positions(frames)
        shape = (spec.layers, 2, 2, spec.heads, positions, spec.head_dim)
        if cache is None or cache.shape[4] < positions:
            # One allocation per slot and window size: no torch.cat while decoding.
            cache = torch.empty(shape, dtype=spec.dtype, device=spec.device)
        self.cache = cache
        self.seq, self.writable = self._sequence(prompt)
        self.pos = 0

    def _sequence(self, prompt: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        spec, frames = self.spec, self.frames
        steps = frames + spec.max_delay + 1
        seq = torch.full((spec.n_q, steps), spec.special, dtype=torch.long, device=spec.device)
        writable = torch.zeros((spec.n_q, steps), dtype=torch.bool, device=spec.device)
        for q, delay in enumerate(spec.delays):
            if prompt is not None:
                seq[q, 1 + delay : 1 + delay + self.prompt_frames] = prompt[q]
            writable[q, 1 + delay + self.prompt_frames : 1 + delay + frames] = True
        return seq, writable

    @property
    def total_positions(self) -> int:
        return self.spec.positions(self.frames)

    @property
    def done(self) -> bool:
        """Every frame of the window is known (the last step has been predicted)."""
        return self.pos >= self.total_positions

    @property
    def steps_left(self) -> int:
        return self.total_positions - self.pos

    def accept(self, tokens: torch.Tensor, fed: int) -> None:
        """Record ``tokens`` ``[K]`` predicted after feeding ``fed`` more positions."""
        self.pos += fed
        column = self.pos
        self.seq[:, column] = torch.where(self.writable[:, column], tokens, self.seq[:, column])

    def codes(self) -> torch.Tensor:
        """The window's frames ``[K, frames]`` (prompt included), undoing the delays."""
        return torch.stack(
            [self.seq[q, 1 + d : 1 + d + self.frames] for q, d in enumerate(self.spec.delays)]
        )


class SlotDecoder:
    """Runs audiocraft's LM modules over slots; owned by one thread at a time."""

    def __init__(self, model: MusicGen) -> None:
        self.model = model
        self.lm = model.lm
        self.spec = LMSpec(model)
        with torch.inference_mode():
            self._linears, self._heads_out = _prepare_linears(model, self.spec)

    # -- conditioning -------------------------------------------------------------------------
    @torch.inference_mode()
    def condition(self, attributes: ConditioningAttributes) -> CrossKV:
        """Cross-attention keys/values for one job (conditional + null rows), computed once."""
        lm = self.lm
        null = ClassifierFreeGuidanceDropout(p=1.0)([attributes])
        tokenized = lm.condition_provider.tokenize([attributes, *null])
        with self.model.autocast:
            tensors = lm.condition_provider(tokenized)
            dummy = torch.zeros((2, 1, self.spec.dim), device=self.spec.device)
            _, source = lm.fuser(dummy, tensors)
            keys, values = [], []
            for layer in _layers(lm):
                attn = _cross(layer)
                dim = self.spec.dim
                w, b = attn.in_proj_weight, attn.in_proj_bias
                k = F.linear(source, w[dim : 2 * dim], None if b is None else b[dim : 2 * dim])
                v = F.linear(source, w[2 * dim :], None if b is None else b[2 * dim :])
                keys.append(self._heads(k).to(self.spec.dtype))
                values.append(self._heads(v).to(self.spec.dtype))
        return CrossKV(keys, values)

    # -- slots ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def open(
        self,
        cross: CrossKV,
        sampling: Sampling,
        generator: torch.Generator,
        frames: int,
        prompt: torch.Tensor | None = None,
        cache: torch.Tensor | None = None,
    ) -> Slot:
        """A slot for a window of ``frames`` frames; prompt frames ``[K, P]`` are prefilled.

        A prompt is fed in one forward pass of its own (positions ``0..P``) and the first new
        token sampled from it, as ``LMModel.generate`` does; without one the slot starts at
        its special-token step and joins the next batched :meth:`step`.
        """
        slot = Slot(self.spec, cross, sampling, generator, frames, prompt, cache)
        if slot.prompt_frames:
            fed = slot.prompt_frames + 1
            ids = slot.seq[None, :, :fed]
            logits = self._forward(ids, [slot])
            slot.accept(self._sample(logits, [slot])[0], fed)
        return slot

    @torch.inference_mode()
    def step(self, slots: list[Slot]) -> None:
        """Advance every slot by one sequence position in one batched forward pass."""
        if not slots:
            return
        tokens = self._sample(self.logits(slots), slots)
        for slot, row in zip(slots, tokens, strict=True):
            slot.accept(row, 1)

    @torch.inference_mode()
    def logits(self, slots: list[Slot]) -> torch.Tensor:
        """Guided logits ``[n, K, card]`` of each slot's next step, without advancing it."""
        ids = torch.stack([s.seq[:, s.pos : s.pos + 1] for s in slots])  # [n, K, 1]
        return self._forward(ids, slots)

    # -- the forward pass ----------------------------------------------------------------------
    def _forward(self, ids: torch.Tensor, slots: list[Slot]) -> torch.Tensor:
        """Logits ``[n, K, card]`` (CFG applied) for the last of ``T`` new positions per slot."""
        lm, spec = self.lm, self.spec
        steps = ids.shape[-1]
        with self.model.autocast:
            x = sum(lm.emb[k](ids[:, k]) for k in range(spec.n_q))  # [n, T, C]
            x = x.repeat_interleave(2, dim=0)  # rows: slot0 cond, slot0 uncond, slot1 ...
            starts = torch.tensor([s.pos for s in slots], device=spec.device)
            positions = starts[:, None] + torch.arange(steps, device=spec.device)[None]
            positions = positions.repeat_interleave(2, dim=0)[..., None]
            transformer = lm.transformer
            pos_emb = create_sin_embedding(positions, spec.dim, transformer.max_period, x.dtype)
            x = x + transformer.positional_scale * pos_emb
            rows = x.shape[0]
            if rows * steps < MIN_ROWS:
                x = torch.cat([x, x.new_zeros((MIN_ROWS - rows, steps, spec.dim))])
            for index, layer in enumerate(_layers(lm)):
                x = self._layer(layer, index, x, slots)
            out = x[:, -1]  # padding rows stay until the last matmul (see MIN_ROWS)
            if lm.out_norm is not None:
                out = lm.out_norm(out)
            logits = torch.stack([head(out) for head in self._heads_out], dim=1)
        logits = logits[:rows].float()
        cond, uncond = logits[0::2], logits[1::2]
        coef = torch.tensor([s.sampling.cfg_coef for s in slots], device=logits.device)
        return uncond + (cond - uncond) * coef[:, None, None]

    def _layer(self, layer: StreamingTransformerLayer, index: int, x: torch.Tensor,
               slots: list[Slot]) -> torch.Tensor:
        """``StreamingTransformerLayer.forward`` with our attention (dropouts: eval, no-ops)."""
        if layer.norm_first:
            x = x + layer.layer_scale_1(self._self_attention(layer, index, layer.norm1(x), slots))
            x = x + layer.layer_scale_cross(
                self._cross_attention(layer, index, layer.norm_cross(x), slots))
            return x + layer.layer_scale_2(self._feed_forward(layer, index, layer.norm2(x)))
        src = x
        x = layer.norm1(x + layer.layer_scale_1(self._self_attention(layer, index, x, slots)))
        # audiocraft feeds the layer's input (not x) to cross-attention in this branch; so do we.
        x = layer.norm_cross(
            x + layer.layer_scale_cross(self._cross_attention(layer, index, src, slots)))
        return layer.norm2(x + layer.layer_scale_2(self._feed_forward(layer, index, x)))

    def _feed_forward(self, layer: StreamingTransformerLayer, index: int,
                      h: torch.Tensor) -> torch.Tensor:
        """``TransformerEncoderLayer._ff_block`` (dropouts are no-ops in eval)."""
        lin = self._linears[index]
        return lin.ff2(layer.activation(lin.ff1(h)))

    def _self_attention(self, layer: StreamingTransformerLayer, index: int, h: torch.Tensor,
                        slots: list[Slot]) -> torch.Tensor:
        attn = layer.self_attn
        spec = self.spec
        rows, steps, _ = h.shape
        projected = self._linears[index].self_in(h)
        packed = projected.view(rows, steps, 3, spec.heads, spec.head_dim)
        q, k, v = (packed[:, :, i].transpose(1, 2) for i in range(3))  # [rows, H, T, Dh]
        outputs = []
        for i, slot in enumerate(slots):
            r = slice(2 * i, 2 * i + 2)
            start, end = slot.pos, slot.pos + steps
            cache = slot.cache[index]
            cache[0, :, :, start:end] = k[r]
            cache[1, :, :, start:end] = v[r]
            outputs.append(_attend(attn, q[r], cache[0, :, :, :end], cache[1, :, :, :end],
                                   causal=steps > 1))
        return self._linears[index].self_out(self._merge(outputs, rows, steps))

    def _cross_attention(self, layer: StreamingTransformerLayer, index: int, h: torch.Tensor,
                         slots: list[Slot]) -> torch.Tensor:
        attn = _cross(layer)
        q = self._heads(self._linears[index].cross_q(h))
        outputs = [
            _attend(attn, q[2 * i : 2 * i + 2], s.cross.keys[index], s.cross.values[index],
                    causal=False)
            for i, s in enumerate(slots)
        ]
        return self._linears[index].cross_out(self._merge(outputs, h.shape[0], h.shape[1]))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``b t (h d) -> b h t d``."""
        b, t, _ = x.shape
        return x.view(b, t, self.spec.heads, self.spec.head_dim).transpose(1, 2)

    def _merge(self, outputs: list[torch.Tensor], rows: int, steps: int) -> torch.Tensor:
        """Per-slot ``[2, H, T, Dh]`` outputs back to ``[rows, T, C]`` (padding rows zero)."""
        out = torch.cat(outputs).transpose(1, 2).reshape(-1, steps, self.spec.dim)
        if out.shape[0] < rows:
            out = torch.cat([out, out.new_zeros((rows - out.shape[0], steps, self.spec.dim))])
        return out

    # -- sampling ------------------------------------------------------------------------------
    def _sample(self, logits: torch.Tensor, slots: list[Slot]) -> torch.Tensor:
        return sample_rows(logits, [s.sampling for s in slots], [s.generator for s in slots])


def _attend(attn: StreamingMultiheadAttention, q: torch.Tensor, k: torch.Tensor,
            v: torch.Tensor, *, causal: bool) -> torch.Tensor:
    """Attention as audiocraft computes it for this module (SDPA or its einsum path)."""
    dtype = q.dtype
    if attn.attention_as_float32:
        q, k, v = q.float(), k.float(), v.float()
    if attn.memory_efficient:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal).to(dtype)
    q = q / q.shape[-1] ** 0.5
    weights = torch.einsum("bhtd,bhkd->bhtk", q, k)
    if causal:
        t, kk = weights.shape[-2:]
        mask = torch.ones(t, kk, dtype=torch.bool, device=q.device).tril(kk - t)
        weights = weights.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(weights, dim=-1).to(v)
    return torch.einsum("bhtk,bhkd->bhtd", weights, v).to(dtype)


def steps_of(plan: list[tuple[int, int]], spec: LMSpec) -> int:
    """Decoding steps (forward passes) a plan takes; prefills count as one."""
    return sum(frames - prompt + spec.max_delay for frames, prompt in plan)


__all__ = [
    "MIN_ROWS", "CrossKV", "LMSpec", "Sampling", "Slot", "SlotDecoder", "make_generator",
    "sample_rows", "steps_of",
]
