"""Batch samplers: component-clean batches (no two examples of one duplicate component share a batch), length
grouping, and the factory the Trainer calls for each training dataset."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import BatchSampler

from contrastive.data import question_key
from contrastive.pairs import AUX_COLUMNS


def length_grouped(order: Sequence[int], lengths: Sequence[int], window: int) -> list[int]:
    """`order` with each consecutive window of `window` indices sorted by length (stable): shuffled mega-batches
    whose batches, cut from the sorted windows, hold examples of similar length and so little padding."""
    if window <= 1:
        return list(order)
    out: list[int] = []
    for start in range(0, len(order), window):
        chunk = list(order[start : start + window])
        out.extend(sorted(chunk, key=lambda i: lengths[i]))
    return out


class ComponentBatchSampler(BatchSampler):
    """Batches in which no two examples share a duplicate component, so no in-batch negative is a duplicate.

    Each example's components are those of all its texts (anchor, positive, hard negative). Indices are
    shuffled with `seed + epoch`; an example that would clash with its batch is deferred to a later batch.
    Once a batch can no longer be filled (the rest all share a few large components), the epoch ends there:
    those examples are dropped from this epoch (a reshuffle gives them a chance in the next one).
    Datasets with a `label` column (the auxiliary pairs) have no in-batch negatives and are batched plainly; joint
    rows (`loss.combine=joint`) are kept apart by their MNRL texts only (their auxiliary pair has no negatives).
    Each epoch's batches are planned once, so `len()` is exact (multi-dataset samplers draw `len()` batches);
    `stats` holds how many examples that epoch deferred and dropped.

    Length grouping (`mega_batches` > 1 and per-example `lengths`): the shuffled order is cut into windows of
    `mega_batches * batch_size` examples, each sorted by length; full batches are formed in each window as above
    (still component-clean; what cannot complete a batch there is sorted into the next window), and the
    batches are then shuffled (seeded) so an epoch does not run short-to-long. Only which examples share a batch
    changes, and padding (hence compute) shrinks; near-duplicate questions have similar lengths, so large
    components crowd the same length range and a few more of their examples may end up dropped from the epoch
    (QQP, 2,000 pairs: ~4% more). `mega_batches` 0 or 1 leaves the batches exactly as without grouping.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
        lookup: Mapping[str, int] | None = None,
        lengths: Sequence[int] | None = None,
        mega_batches: int = 0,
    ) -> None:
        super().__init__(range(len(dataset)), batch_size=batch_size, drop_last=drop_last)
        self.generator = generator
        self.seed = seed
        self.epoch = 0
        labels = set(valid_label_columns or ["label", "score"])
        self.text_columns = [c for c in dataset.column_names if c not in labels and c not in AUX_COLUMNS]
        # labeled pairs have no in-batch negatives; a joint row (MNRL texts + an auxiliary pair) does
        self.plain = bool(labels & set(dataset.column_names)) and not set(AUX_COLUMNS) & set(dataset.column_names)
        self.groups = self._example_groups(dataset, lookup or {})
        if lengths is not None and len(lengths) != len(self.groups):
            raise ValueError(f"lengths: {len(lengths)} values for {len(self.groups)} examples")
        self.lengths = list(lengths) if lengths is not None else None
        self.mega_batches = int(mega_batches) if self.lengths is not None else 0
        self.stats: dict[str, int] = {"examples": len(dataset), "deferred": 0, "dropped": 0}
        self._planned: tuple[tuple[int, int], list[list[int]]] | None = None

    def _example_groups(self, dataset: Any, lookup: Mapping[str, int]) -> list[frozenset]:
        columns = [dataset[c] for c in self.text_columns]
        groups = []
        for texts in zip(*columns):
            keys = [question_key(t) for t in texts]
            groups.append(frozenset(lookup.get(k, k) for k in keys))
        return groups

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(len(self.groups), generator=gen).tolist()

    def _shuffle_batches(self, batches: list[list[int]]) -> list[list[int]]:
        """Full batches in a seeded random order (a short last batch stays last): grouped windows run short
        to long, and an epoch should not."""
        if self.mega_batches <= 1 or len(batches) < 2:
            return batches
        tail = [batches.pop()] if len(batches[-1]) < self.batch_size else []
        gen = torch.Generator().manual_seed(self.seed + self.epoch + 1_000_003)
        return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()] + tail

    def _plan(self) -> list[list[int]]:
        """This epoch's batches, computed once per epoch so that `__len__` matches what `__iter__` yields."""
        if self._planned is not None and self._planned[0] == (self.seed, self.epoch):
            return self._planned[1]
        order = self._order()
        self.stats = {"examples": len(self.groups), "deferred": 0, "dropped": 0}
        batches = self._plain(order) if self.plain else self._component_batches(order)
        batches = self._shuffle_batches(batches)
        self._planned = ((self.seed, self.epoch), batches)
        return batches

    def _fill(self, remaining: list[int], deferred_once: set[int]) -> tuple[list[int], list[int]]:
        """One batch taken greedily from `remaining` (an example clashing with it is passed over, i.e. deferred),
        and what is left, in order."""
        batch: list[int] = []
        used: set = set()
        rest: list[int] = []
        for pos, idx in enumerate(remaining):
            if len(batch) == self.batch_size:
                rest.extend(remaining[pos:])
                break
            if self.groups[idx] & used:
                deferred_once.add(idx)
                rest.append(idx)
            else:
                batch.append(idx)
                used |= self.groups[idx]
        return batch, rest

    def _grouped_windows(self, order: list[int], batches: list[list[int]], deferred_once: set[int]) -> list[int]:
        """Full batches cut from each length-sorted window of the shuffled order (appended to `batches`). Examples
        that cannot complete a batch in their window are sorted into the next one by length (not prepended to
        its shortest batch); returns what the last window leaves."""
        window = self.mega_batches * self.batch_size
        carry: list[int] = []
        for start in range(0, len(order), window):
            pool = sorted(carry + order[start : start + window], key=self.lengths.__getitem__)
            while len(pool) >= self.batch_size:
                batch, rest = self._fill(pool, deferred_once)
                if len(batch) < self.batch_size:
                    break
                batches.append(batch)
                pool = rest
            carry = pool
        return carry

    def _component_batches(self, remaining: list[int]) -> list[list[int]]:
        batches: list[list[int]] = []
        deferred_once: set[int] = set()
        if self.mega_batches > 1:
            remaining = self._grouped_windows(remaining, batches, deferred_once)
        while remaining:
            batch, remaining = self._fill(remaining, deferred_once)
            if len(batch) < self.batch_size:
                # short batch: what is left all clashes (a few large components). Rather than a tail of
                # tiny batches with almost no in-batch negatives, leave those examples out of this epoch.
                self.stats["dropped"] += len(remaining) + (len(batch) if self.drop_last else 0)
                deferred_once.difference_update(remaining)
                if not self.drop_last:
                    batches.append(batch)
                break
            batches.append(batch)
        self.stats["deferred"] = len(deferred_once)
        return batches

    def _plain(self, order: list[int]) -> list[list[int]]:
        if self.mega_batches > 1:
            order = length_grouped(order, self.lengths, self.mega_batches * self.batch_size)
        batches = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        if batches and len(batches[-1]) < self.batch_size and self.drop_last:
            self.stats["dropped"] += len(batches.pop())
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from (list(batch) for batch in self._plan())

    def __len__(self) -> int:
        return len(self._plan())


@functools.lru_cache(maxsize=4)
def _tokenizer_counts(path: str, limit: int | None) -> tuple[Any, dict[str, int]]:
    """The tokenizer of a model directory or hub id, and its token counts so far (this process)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path), {}


def _counted(path: str, limit: int | None, texts: list[str]) -> list[int]:
    """Token counts of `texts` (special tokens included, truncated at `limit`), tokenizing only unseen texts."""
    tokenizer, known = _tokenizer_counts(path, limit)
    texts = [str(t) for t in texts]
    new = list(dict.fromkeys(t for t in texts if t not in known))
    if new:
        ids = tokenizer(new, truncation=limit is not None, max_length=limit)["input_ids"]
        known.update(zip(new, (len(row) for row in ids)))
    return [known[t] for t in texts]


class SamplerFactory:
    """Builds the configured batch sampler for each dataset and keeps them, to report what they deferred.

    With `length_grouping` > 1 (component sampler only) each example's length is the summed token count of its
    texts (`count_tokens`), and batches are cut from length-sorted windows of that many batches.
    """

    def __init__(
        self,
        kind: str,
        lookup: dict[str, int],
        length_grouping: int = 0,
        count_tokens: Callable[[list[str]], list[int]] | None = None,
    ) -> None:
        self.kind = kind
        self.lookup = lookup
        self.samplers: list[Any] = []
        self.group_by_length(length_grouping, count_tokens)

    def group_by_length(self, windows: int, count_tokens: Callable[[list[str]], list[int]] | None) -> None:
        """Turn length grouping on (windows > 1, with a token counter) or off."""
        if windows > 1 and self.kind != "component":
            raise ValueError(f"length grouping needs the component sampler, not {self.kind!r}")
        self.length_grouping = windows if count_tokens is not None else 0
        self.count_tokens = count_tokens

    @staticmethod
    def token_counter(name_or_path: str, max_seq_length: int | None) -> Callable[[list[str]], list[int]]:
        """texts -> token counts by the model's tokenizer (special tokens included, truncated as the model is).

        Counts are kept per process and tokenizer: a sweep's later trials in one worker tokenize no text twice."""
        from contrastive.model import resolve_model

        limit = int(max_seq_length) if max_seq_length else None
        return functools.partial(_counted, resolve_model(name_or_path), limit)

    def lengths(self, dataset: Any, label_columns: list[str] | None = None) -> list[int]:
        """Per example, the summed token count of its text columns."""
        labels = set(label_columns or ["label", "score"])
        columns = [c for c in dataset.column_names if c not in labels]
        totals = [0] * len(dataset)
        for column in columns:
            totals = [a + b for a, b in zip(totals, self.count_tokens(dataset[column]))]
        return totals

    def __call__(self, dataset: Any, **kwargs: Any):
        from sentence_transformers.base.sampler import DefaultBatchSampler, NoDuplicatesBatchSampler

        if self.kind == "component":
            grouped = self.length_grouping > 1
            lengths = self.lengths(dataset, kwargs.get("valid_label_columns")) if grouped else None
            sampler = ComponentBatchSampler(
                dataset, lookup=self.lookup, lengths=lengths, mega_batches=self.length_grouping, **kwargs
            )
        elif self.kind == "no_duplicates":
            sampler = NoDuplicatesBatchSampler(dataset, **kwargs)
        else:
            sampler = DefaultBatchSampler(dataset, **kwargs)
        self.samplers.append(sampler)
        return sampler

    def report(self) -> dict[str, int]:
        """Examples deferred to a later batch and dropped, summed over our component samplers."""
        stats = [s.stats for s in self.samplers if isinstance(s, ComponentBatchSampler) and not s.plain]
        return (
            {
                "sampler_deferred": sum(s["deferred"] for s in stats),
                "sampler_dropped": sum(s["dropped"] for s in stats),
            }
            if stats
            else {}
        )
