"""The KV cache of the encoder (prompt prefill and canvas commits), read by every decoder step.

Two implementations of one small interface (`attend`, `advance`, `truncate`):
- `GrowingKVCache`: the reference. Tensors grow by concatenation and attention is called as
  transformers calls it, so float32 results match it; sliding layers keep their window plus
  ROLLBACK positions.
- `StaticKVCache`: fixed-size buffers for the fast path. A decoder step has static shapes and
  never reads its position from the host: sliding layers keep a ring of `window − 1 + canvas`
  positions, full-attention layers a capacity that grows in buckets, each buffer has `canvas`
  scratch slots where a decoder step's K/V go, and masks come from a device-side length. That is
  what lets a decode step be captured once per capacity bucket as a CUDA graph
  (gpu-engine.md §6.7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from dg_chat.engine.backends.torch_dg.functional import sdpa
from dg_chat.engine.backends.torch_dg.hparams import HParams, LayerShape


@dataclass(frozen=True)
class Positions:
    """Absolute positions of the tokens in a forward, with their RoPE (cos, sin) per layer kind
    (keyed by `sliding`), computed once per forward. `start` is a host int for the encoder and
    a device tensor for a static decoder step."""

    start: int | torch.Tensor
    ids: torch.Tensor
    rope: dict[bool, tuple[torch.Tensor, torch.Tensor]]


class KVCache(Protocol):
    encode_chunk: int
    """Most positions one encoder pass may append."""

    @property
    def length(self) -> int:
        """Positions held (host-side bookkeeping)."""
        ...

    @property
    def decode_start(self) -> int | torch.Tensor:
        """Where a decoder step's canvas starts: the length, as a device scalar where a captured
        step must read it on the device."""
        ...

    def reserve(self, n: int) -> None:
        """Make room for `n` more positions (before encoding them)."""
        ...

    def begin_decode(self) -> None:
        """A decoder step starts: what its layers share (masks) is computed once here."""
        ...

    def scratch(self, i: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Where a decoder step should write layer i's K and V ([kv_heads, canvas, head_dim]),
        or (None, None) when the cache takes them in `attend`."""
        ...

    def attend(self, i: int, layer: LayerShape, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               pos: Positions, encoder: bool) -> torch.Tensor:
        """Attention of layer `i` for a chunk: q [heads, T, head_dim], this chunk's k and v
        [kv_heads, T, head_dim]; returns [heads, T, head_dim]. The encoder attends causally and
        stores k/v; the decoder attends to the cache plus the whole chunk and stores nothing."""
        ...

    def advance(self, n: int) -> None:
        """An encoder chunk of `n` positions has gone through every layer."""
        ...

    def truncate(self, length: int) -> bool:
        """Cut back to the first `length` positions; False if the sliding layers no longer hold
        the window that position `length` needs (then the caller starts over: `truncate(0)`
        always succeeds)."""
        ...


@dataclass
class LayerCache:
    """K/V of one layer for the cached positions [start, start + len)."""

    keys: torch.Tensor  # [kv_heads, len, head_dim]
    values: torch.Tensor
    start: int = 0

    @property
    def end(self) -> int:
        return self.start + self.keys.shape[1]


class GrowingKVCache:
    # A sliding layer keeps this many positions beyond its window, so that the next chat turn can
    # roll the cache back over the last answer instead of re-encoding the whole conversation.
    ROLLBACK = 2048

    encode_chunk = 4096

    def __init__(self, hp: HParams):
        self.hp = hp
        self.layers: list[LayerCache] = []

    @property
    def length(self) -> int:
        return self.layers[0].end if self.layers else 0

    @property
    def decode_start(self) -> int:
        return self.length

    def reserve(self, n: int) -> None:
        pass  # grows as it goes

    def begin_decode(self) -> None:
        pass

    def scratch(self, i: int) -> tuple[None, None]:
        return None, None

    def attend(self, i: int, layer: LayerShape, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               pos: Positions, encoder: bool) -> torch.Tensor:
        cache = self.layers[i] if i < len(self.layers) else None
        t, start = q.shape[1], int(pos.start)
        keys, values, mask, first = k, v, None, start
        if cache is not None and cache.keys.shape[1]:
            first = cache.start
            if layer.sliding:  # only the window's worth of the prefix is visible
                first = max(cache.start, cache.end - (self.hp.window - 1))
            keys = torch.cat((cache.keys[:, first - cache.start:], k), dim=1)
            values = torch.cat((cache.values[:, first - cache.start:], v), dim=1)
        kv = keys.shape[1]
        # transformers leaves the causal mask to SDPA's is_causal when the chunk starts at position 0
        # (is_causal aligns top-left: right only without a prefix) and the window does not bite;
        # doing the same keeps SDPA on the same kernel
        if encoder and ((layer.sliding and kv >= self.hp.window) or not (t == 1 or kv == t or start == 0)):
            key_pos = torch.arange(first, first + kv, device=q.device)
            mask = key_pos[None, :] <= pos.ids[:, None]
            if layer.sliding:
                mask &= key_pos[None, :] > pos.ids[:, None] - self.hp.window
        out = sdpa(q, keys, values, mask, causal=encoder and mask is None)
        if encoder:
            self._store(i, k, v, start)
        return out

    def _store(self, i: int, k: torch.Tensor, v: torch.Tensor, start: int) -> None:
        if i == len(self.layers):
            self.layers.append(LayerCache(k, v, start))
            return
        cache = self.layers[i]
        cache.keys = torch.cat((cache.keys, k), dim=1)
        cache.values = torch.cat((cache.values, v), dim=1)
        if self.hp.layers[i].sliding:
            drop = cache.keys.shape[1] - (self.hp.window - 1 + self.ROLLBACK)
            if drop > 0:
                cache.keys, cache.values = cache.keys[:, drop:], cache.values[:, drop:]
                cache.start += drop

    def advance(self, n: int) -> None:
        pass  # the layers' own lengths already say it

    def truncate(self, length: int) -> bool:
        if length == 0:
            self.layers = []
            return True
        need = max(0, length - (self.hp.window - 1))
        if any(self.hp.layers[i].sliding and c.start > need for i, c in enumerate(self.layers)):
            return False
        for cache in self.layers:
            keep = max(0, length - cache.start)
            cache.keys, cache.values = cache.keys[:, :keep], cache.values[:, :keep]
        return True


class StaticKVCache:
    """Preallocated K/V: [kv_heads, slots + canvas, head_dim] per layer, the last `canvas` slots
    being a decoder step's scratch. Sliding layers: a ring of `window − 1 + canvas` slots
    (position p in slot p mod ring); full layers: slot p holds position p, up to `capacity`."""

    BUCKET = 1024
    """Full-layer capacities are multiples of this; each one is a shape to capture."""

    def __init__(self, hp: HParams, device: torch.device, dtype: torch.dtype, capacity: int | None = None):
        self.hp, self.device, self.dtype = hp, device, dtype
        self.canvas = self.encode_chunk = hp.canvas_length
        self.ring = self.ring_slots(hp)
        self._length = 0
        self.length_t = torch.zeros((), dtype=torch.int64, device=device)
        """The length as a device scalar: what a captured decoder step reads."""
        self.capacity = 0
        self._masks: dict[bool, torch.Tensor] = {}
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._allocate(min(self._bucket(capacity or self.BUCKET), hp.context_length))

    @staticmethod
    def ring_slots(hp: HParams) -> int:
        """Positions a sliding layer's ring holds: the window before a chunk, plus the chunk."""
        return hp.window - 1 + hp.canvas_length

    @property
    def length(self) -> int:
        return self._length

    @property
    def decode_start(self) -> torch.Tensor:
        return self.length_t

    def _bucket(self, n: int) -> int:
        return -(-n // self.BUCKET) * self.BUCKET

    def slots(self, layer: LayerShape) -> int:
        return self.ring if layer.sliding else self.capacity

    def _allocate(self, capacity: int) -> None:
        old_keys, old_values, self.capacity = self.keys, self.values, capacity
        self.keys, self.values = [], []
        for i, layer in enumerate(self.hp.layers):
            shape = (layer.kv_heads, self.slots(layer) + self.canvas, layer.head_dim)
            keys = torch.zeros(shape, dtype=self.dtype, device=self.device)
            values = torch.zeros(shape, dtype=self.dtype, device=self.device)
            if old_keys:  # a bigger bucket: carry the cached positions over
                held = self.ring if layer.sliding else self._length
                keys[:, :held] = old_keys[i][:, :held]
                values[:, :held] = old_values[i][:, :held]
            self.keys.append(keys)
            self.values.append(values)

    def reserve(self, n: int) -> None:
        """Make room for `n` more positions in the full layers (a new, bigger bucket)."""
        need = self._length + n
        if need > self.capacity:
            self._allocate(min(max(self._bucket(need), 2 * self.capacity), self.hp.context_length))

    def scratch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Where a decoder step writes layer i's canvas K and V: [kv_heads, canvas, head_dim]."""
        slots = self.slots(self.hp.layers[i])
        return self.keys[i][:, slots:], self.values[i][:, slots:]

    def _slot_positions(self, layer: LayerShape, length: torch.Tensor | int) -> torch.Tensor:
        """The position each slot of a layer holds once `length` positions are cached (< 0: none)."""
        s = torch.arange(self.slots(layer), device=self.device)
        if not layer.sliding:
            return torch.where(s < length, s, -1)
        return length - 1 - torch.remainder(length - 1 - s, self.ring)

    def begin_decode(self) -> None:
        kinds = {layer.sliding: layer for layer in self.hp.layers}
        self._masks = {sliding: self.decoder_mask(layer) for sliding, layer in kinds.items()}

    def decoder_mask(self, layer: LayerShape) -> torch.Tensor:
        """bool [canvas, slots + canvas]: the visible prefix (the window's worth on sliding
        layers), then the whole canvas. Built from `length_t` on the device."""
        p = self._slot_positions(layer, self.length_t)
        visible = p >= 0
        if layer.sliding:
            visible &= p > self.length_t - self.hp.window
        prefix = visible[None, :].expand(self.canvas, -1)
        return torch.cat((prefix, torch.ones(self.canvas, self.canvas, dtype=torch.bool, device=self.device)), dim=1)

    def attend(self, i: int, layer: LayerShape, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               pos: Positions, encoder: bool) -> torch.Tensor:
        slots = self.slots(layer)
        keys, values = self.keys[i], self.values[i]
        if encoder:
            index = pos.ids % self.ring if layer.sliding else pos.ids
            keys.index_copy_(1, index, k)
            values.index_copy_(1, index, v)
            p = self._slot_positions(layer, int(pos.start) + q.shape[1])
            mask = (p[None, :] >= 0) & (p[None, :] <= pos.ids[:, None])
            if layer.sliding:
                mask &= p[None, :] > pos.ids[:, None] - self.hp.window
            keys, values = keys[:, :slots], values[:, :slots]
        else:
            scratch_k, scratch_v = self.scratch(i)
            if scratch_k.data_ptr() != k.data_ptr():
                scratch_k.copy_(k)
                scratch_v.copy_(v)
            mask = self._masks[layer.sliding]
        out = F.scaled_dot_product_attention(q[None], keys[None], values[None], attn_mask=mask[None, None],
                                             scale=1.0, enable_gqa=True)
        return out[0]

    def advance(self, n: int) -> None:
        self._length += n
        self.length_t.fill_(self._length)

    def truncate(self, length: int) -> bool:
        if length > self._length:
            return False
        rolled_back = self._length - length
        if length and rolled_back > self.canvas and any(layer.sliding for layer in self.hp.layers):
            return False  # the ring has overwritten positions the window at `length` needs
        self._length = length
        self.length_t.fill_(length)
        return True
