"""Token data for training: flat id arrays, token-budget batches, collation into a Batch.

Token ids live in flat numpy arrays with offsets (read zero-copy from the prepared Arrow
files), so a batch is a gather, not a Python loop over lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from nmt_bert.model.special_tokens import BOS, EOS, PAD


@dataclass
class Batch:
    src_ids: Tensor  # (B, S) rows of the (pruned) encoder embedding table
    src_mask: Tensor  # (B, S) bool, True on real source tokens
    tgt_in: Tensor  # (B, T) BOS + target ids, PAD after
    labels: Tensor  # (B, T) target ids + EOS, PAD after
    index: Tensor  # (B,) example indices into the split (for the encoder-state cache)

    @property
    def target_tokens(self) -> int:
        return int((self.labels != PAD).sum())

    @property
    def tokens(self) -> int:
        """Real source + target tokens (the throughput unit)."""
        return int(self.src_mask.sum()) + self.target_tokens

    def to(self, device: torch.device) -> "Batch":
        return Batch(*(t.to(device, non_blocking=True) for t in
                       (self.src_ids, self.src_mask, self.tgt_in, self.labels, self.index)))


class TokenData:
    """One split's source and target ids as flat arrays plus offsets."""

    def __init__(self, src_flat: np.ndarray, src_offsets: np.ndarray,
                 tgt_flat: np.ndarray, tgt_offsets: np.ndarray):
        self.src_flat, self.src_offsets = src_flat, src_offsets
        self.tgt_flat, self.tgt_offsets = tgt_flat, tgt_offsets
        self.src_lens = np.diff(src_offsets)
        self.tgt_lens = np.diff(tgt_offsets) + 1  # + EOS
        # the longest of each side: how far `collate` may round a batch's lengths up
        self.src_cap = int(self.src_lens.max()) if len(self.src_lens) else 0
        self.tgt_cap = int(self.tgt_lens.max()) if len(self.tgt_lens) else 0

    @classmethod
    def from_dataset(cls, dataset, lookup: np.ndarray) -> "TokenData":
        """Read `src_ids`/`tgt_ids` list columns; map source ids through `lookup` (pruning)."""
        src_flat, src_off = _flat(dataset, "src_ids")
        tgt_flat, tgt_off = _flat(dataset, "tgt_ids")
        return cls(lookup[src_flat], src_off, tgt_flat.astype(np.int64), tgt_off)

    def __len__(self) -> int:
        return len(self.src_lens)

    def collate(self, index: np.ndarray, multiples: tuple[int, int] = (1, 1)) -> Batch:
        """The examples `index` as one Batch, padded to the longest source and target, each
        rounded up to its multiple in `multiples` (source, target; see `round_up`)."""
        b = len(index)
        s_len = round_up(self.src_lens[index].max(), multiples[0], self.src_cap)
        t_len = round_up(self.tgt_lens[index].max(), multiples[1], self.tgt_cap)
        src = np.zeros((b, s_len), dtype=np.int64)
        mask = np.zeros((b, s_len), dtype=bool)
        labels = np.full((b, t_len), PAD, dtype=np.int64)
        for row, i in enumerate(index):
            s0, s1 = self.src_offsets[i], self.src_offsets[i + 1]
            src[row, : s1 - s0] = self.src_flat[s0:s1]
            mask[row, : s1 - s0] = True
            t0, t1 = self.tgt_offsets[i], self.tgt_offsets[i + 1]
            labels[row, : t1 - t0] = self.tgt_flat[t0:t1]
            labels[row, t1 - t0] = EOS
        labels_t = torch.from_numpy(labels)
        return Batch(torch.from_numpy(src), torch.from_numpy(mask), shift_right(labels_t), labels_t,
                     torch.from_numpy(np.asarray(index, dtype=np.int64)))


SORT_SIDES = ("source", "target")  # the sides a batch list can be sorted by first


def round_up(length, multiple: int, cap) -> int | np.ndarray:
    """Padded length(s): `length` rounded up to a multiple of `multiple`, but never past
    `cap` (the side's longest example, which the model's positions are sized for) unless
    `length` itself is longer. Works on one length or an array of them."""
    rounded = np.maximum(np.minimum(-(-np.asarray(length) // multiple) * multiple, cap), length)
    return int(rounded) if np.ndim(rounded) == 0 else rounded


@dataclass(frozen=True)
class BatchPlan:
    """How a stage cuts its batches: the side sorted by first, and the multiples its padded
    source and target lengths are rounded up to."""

    sort_by: str = "source"
    multiples: tuple[int, int] = (1, 1)  # (source, target)


def token_batches(src_lens: np.ndarray, tgt_lens: np.ndarray, batch_tokens: int,
                  seed: int, epoch: int, shuffle: bool = True,
                  sort_by: str = "source", multiples: tuple[int, int] = (1, 1)
                  ) -> list[np.ndarray]:
    """Group examples of similar length so that padded source + target tokens <= budget.

    Examples are sorted by the length of the `sort_by` side ("source" or "target"), then the
    other's (ties broken randomly per epoch), cut into batches, and the batch order is
    shuffled: the same (seed, epoch, sort_by, multiples) always gives the same batches,
    which is what makes resuming mid-epoch exact. The first side is padded least.

    Lengths count as padded (`round_up` to `multiples`, as `TokenData.collate` pads them),
    so batches of one rounded (source, target) length have one shape: on a CPU, torch's
    matmuls (oneDNN) build kernels for each shape they have not seen (`stage_plan`).
    """
    if sort_by not in SORT_SIDES:
        raise ValueError(f"sort_by must be one of {SORT_SIDES}, not {sort_by!r}")
    rng = np.random.default_rng([seed, epoch])
    if len(src_lens) and multiples != (1, 1):
        src_lens = round_up(src_lens, multiples[0], src_lens.max())
        tgt_lens = round_up(tgt_lens, multiples[1], tgt_lens.max())
    noise = rng.random(len(src_lens)) if shuffle else np.arange(len(src_lens))
    first, second = (src_lens, tgt_lens) if sort_by == "source" else (tgt_lens, src_lens)
    order = np.lexsort((noise, second, first))
    batches, start = [], 0
    while start < len(order):
        end, max_s, max_t = start, 0, 0
        while end < len(order):
            i = order[end]
            s, t = max(max_s, src_lens[i]), max(max_t, tgt_lens[i])
            if end > start and (end - start + 1) * (s + t) > batch_tokens:
                break
            max_s, max_t, end = s, t, end + 1
        batches.append(order[start:end])
        start = end
    if shuffle:
        rng.shuffle(batches)
    return batches


def stage_sort(setting: str, stage: int) -> str:
    """The side a stage's batches are sorted by first (`train.batch_order`): the setting
    itself, or for "auto" the side whose padding costs more in that stage. In stage 1 the
    encoder does not train (its states are cached or run forward only), so a padded target
    position, which runs the whole decoder and the softmax forward and backward, costs far
    more than a padded source position: target first (stage-1 steps of the fast recipe on 2
    cores: 6% more real tokens/s, target padding 7.7% -> 0.2%, source 0.2% -> 6.5%;
    bench/step_parts.py). In stage 2 every source position trains the encoder: source first.
    """
    if setting != "auto":
        return setting
    return "target" if stage == 1 else "source"


def stage_plan(train, stage: int) -> BatchPlan:
    """The batches of `stage` under the train config `train`: sorted as `stage_sort` says;
    in stage 1 the padded lengths rounded up to `train.stage1_source_multiple` and
    `train.stage1_target_multiple`, so that its batches come in a few dozen shapes whose
    kernels oneDNN keeps (nmt_bert/cpu.py) instead of a new shape nearly every step. A
    stage-1 step is small and its encoder states are cached, so kernel builds were a large
    share of it and source padding is cheap; stage 2's larger steps gained nothing from
    rounding (bench/README.md), so its lengths stay exact."""
    sort_by = stage_sort(train.batch_order, stage)
    if stage != 1:
        return BatchPlan(sort_by)
    return BatchPlan(sort_by, (train.stage1_source_multiple, train.stage1_target_multiple))


class EpochBatches:
    """The training batches, epoch after epoch, drawn at a run's (epoch, position).

    The batches are a function of (seed, epoch, plan), so a resumed run rebuilds the ones it
    was reading. A stage that cuts them otherwise (`stage_plan`) reads the rest of the epoch
    in its own way, as a resumed run rebuilds it. `shard` keeps a replica's share.
    """

    def __init__(self, data: TokenData, batch_tokens: int, seed: int, shard=lambda b: b):
        self.data, self.batch_tokens, self.seed, self.shard = data, batch_tokens, seed, shard
        self.batches: list[np.ndarray] = []
        self.plan: BatchPlan | None = None

    def next(self, state, plan: BatchPlan) -> Batch:
        """The batch at `state.position` of `state.epoch`; advances both."""
        while True:
            if not self.batches or plan != self.plan:
                self.batches = self.shard(token_batches(
                    self.data.src_lens, self.data.tgt_lens, self.batch_tokens, self.seed,
                    state.epoch, sort_by=plan.sort_by, multiples=plan.multiples))
                self.plan = plan
            if state.position < len(self.batches):
                index = self.batches[state.position]
                state.position += 1
                return self.data.collate(index, plan.multiples)
            state.epoch, state.position, self.batches = state.epoch + 1, 0, []


def _flat(dataset, column: str) -> tuple[np.ndarray, np.ndarray]:
    """A list column as (flat values, offsets) without materialising Python lists."""
    if getattr(dataset, "_indices", None) is not None:  # a select()/shuffle() view
        dataset = dataset.flatten_indices()
    array = dataset.data.column(column).combine_chunks()
    offsets = np.asarray(array.offsets, dtype=np.int64)
    values = np.asarray(array.values, dtype=np.int64)
    return values[offsets[0]: offsets[-1]], offsets - offsets[0]


def shift_right(labels: Tensor) -> Tensor:
    """Decoder input: BOS followed by the labels without their last position. (B, T) -> (B, T)."""
    start = torch.full_like(labels[:, :1], BOS)
    shifted = torch.cat([start, labels[:, :-1]], dim=1)
    return shifted.masked_fill(shifted == EOS, PAD)
