"""`BDHCache`: the recurrent state of a batch, as a transformers `Cache` for `generate()`.

BDH keeps no keys and values per token: each layer and head holds one state rho [N, D]
(`bdh.model.BDHState`), so the cache has a fixed size whatever the generated length, and
nothing is sliced, masked or offloaded per position. It subclasses `Cache` with no layers
(transformers only inspects its flags and asks for its length) and answers the batch
operations `generate()` uses: reordering for beam search, selection and repetition.
"""

from __future__ import annotations

from torch import Tensor
from transformers.cache_utils import Cache

from bdh.errors import HFInputError
from bdh.model import BDHState


class BDHCache(Cache):
    """A `BDHState` (kv [n_layer, B, H, N, D], position) and the batch's left padding.

    pads [B]: the padding columns each row began with (skipped, never written into the
    state), or None; next_position_ids [B]: the position id each row's next token must
    carry when position ids are given, or None.
    """

    is_compileable = False
    is_croppable = False

    def __init__(self, state: BDHState, pads: Tensor | None = None) -> None:
        super().__init__(layers=[])
        self.state = state
        self.pads = pads
        self.next_position_ids: Tensor | None = None

    def __repr__(self) -> str:
        return f"BDHCache(batch={self.batch_size}, position={self.state.position}, bytes={self.nbytes()})"

    def __len__(self) -> int:
        return self.state.kv.shape[0]

    @property
    def batch_size(self) -> int:
        return self.state.batch_size

    @property
    def is_initialized(self) -> bool:
        return True

    @property
    def is_sliding(self) -> list[bool]:
        return [False] * len(self)

    @property
    def is_linear(self) -> list[bool]:
        # Linear attention: transformers builds no attention masks and slices nothing for it.
        return [True] * len(self)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Columns of input consumed so far (left padding included)."""
        return self.state.position

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1  # no limit: the state does not grow

    def nbytes(self) -> int:
        """Bytes of the recurrent state; the same after 10 or 10,000 tokens."""
        return self.state.nbytes()

    def update(self, *args: object, **kwargs: object) -> tuple[Tensor, Tensor]:
        raise HFInputError("BDHCache holds a recurrent state, not per-token keys and values")

    def crop(self, max_length: int) -> None:
        raise HFInputError("a recurrent state cannot forget tokens: BDHCache cannot be cropped")

    def reset(self) -> None:
        self.state.kv.zero_()
        self.state.position = 0
        self.pads = self.next_position_ids = None

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep (and reorder to) the rows `indices` of the batch."""
        self.state.kv = self.state.kv.index_select(1, indices.to(self.state.kv.device))
        if self.pads is not None:
            self.pads = self.pads[indices.to(self.pads.device)]
        if self.next_position_ids is not None:
            self.next_position_ids = self.next_position_ids[
                indices.to(self.next_position_ids.device)
            ]

    def reorder_cache(self, beam_idx: Tensor) -> None:
        """Beam search: row i continues the beam beam_idx[i]."""
        self.batch_select_indices(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.state.kv = self.state.kv.repeat_interleave(repeats, dim=1)
        if self.pads is not None:
            self.pads = self.pads.repeat_interleave(repeats)
        if self.next_position_ids is not None:
            self.next_position_ids = self.next_position_ids.repeat_interleave(repeats)
