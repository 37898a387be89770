"""Exact nearest-neighbour kernels over unit embeddings (cosine = dot product), one score block at a time.

One kernel serves the evaluation (ranking metrics), hard-negative mining, the app's search and its dedup:

* `blocked_top_k`: per query, the k best corpus rows, ties to the lower row, the query's own row excluded.
  Each (query_chunk x chunk_size) block of scores is one torch matmul (MKL, the process's intra-op threads),
  written into a reused buffer. A full top-k of every block would cost more than the matmul at k = 100, so the
  kernel keeps, per query, the k best rows seen so far and their k-th score `t`; a later block can only add
  rows scoring strictly above `t` (a tie at `t` loses: every row kept so far has a lower index). The block is
  screened by the maximum of each group of GROUP columns (one torch reduction on the intra-op threads); only
  groups above `t` are compared element by element, or, in the early blocks where most groups pass, the whole
  block (numpy compare + `np.flatnonzero`, ~5x faster than torch.nonzero here). The candidates wait until
  there are about k per query, are merged with `torch.topk`, and `t` rises. Where a merge's k-th and
  (k+1)-th scores tie, that line is re-selected by a full (score, row) sort, so the result is exact and
  independent of the block sizes. At 100k questions x 384 d the score matmuls run at ~93% of this machine's
  fp32 peak, and the selection adds about half of their time again (`make bench`, row 4c).
* `pairs_at_least`: every pair i < j with cosine >= a threshold, over the upper triangle only.

Memory is bounded by one block (query_chunk x chunk_size float32 and a bool mask of the same shape) plus the
candidates; nothing N x N is ever held.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch

NO_ROW = np.iinfo(np.int64).max  # the index of an empty slot: it loses every tie
FIRST_GROUP = 8  # columns per group whose maxima set the first block's floor
GROUP = 32  # columns per group whose maximum screens a block: only groups above the floor are compared


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """A float32 C-contiguous view (no copy when the array already is one). Read-only arrays (the embedding
    cache's) are fine: the kernels only read their inputs, so torch's warning about them is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def score_blocks(
    queries: np.ndarray, corpus: np.ndarray, chunk_size: int, start: int = 0
) -> Iterator[tuple[int, np.ndarray]]:
    """(first corpus row, scores) of each block of `chunk_size` corpus rows from `start` on: queries @ rows.T,
    written into one reused float32 buffer (a block is valid until the next one is produced)."""
    q, c = _as_tensor(queries), _as_tensor(corpus)
    width = max(1, min(int(chunk_size), len(corpus) - start))
    buffer = torch.empty((len(q), width), dtype=torch.float32)
    for c0 in range(start, len(corpus), width):
        rows = c[c0 : c0 + width]
        out = buffer[:, : len(rows)]
        torch.mm(q, rows.T, out=out)
        yield c0, out.numpy()


def exact_top_k(values: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per line, the k best (value, row) pairs by value descending, then row ascending: the reference rule."""
    order = np.lexsort((rows, -values), axis=-1)[:, :k]
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(rows, order, axis=1)


def _select(values: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (value, row) per line of arrays wider than k, under the reference rule: torch.topk, and an exact
    sort for the lines whose k-th and (k+1)-th values tie (where topk's choice among equal values is arbitrary)."""
    top_v, top_j = torch.topk(torch.from_numpy(values), k + 1, dim=1)
    top_v, top_j = top_v.numpy(), top_j.numpy()
    new_v, new_i = top_v[:, :k].copy(), np.take_along_axis(rows, top_j[:, :k], axis=1)
    tied = np.flatnonzero(top_v[:, k - 1] == top_v[:, k])
    if len(tied):
        new_v[tied], new_i[tied] = exact_top_k(values[tied], rows[tied], k)
    return new_v, new_i


def _merge(
    best_v: np.ndarray, best_i: np.ndarray, cand_v: np.ndarray, cand_i: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k best of (kept, candidates) per line under the reference rule."""
    return _select(np.concatenate([best_v, cand_v], axis=1), np.concatenate([best_i, cand_i], axis=1), k)


def _block_best(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (value, column) per line of a block wider than k, under the reference rule."""
    return _select(block, np.broadcast_to(np.arange(block.shape[1]), block.shape), k)


def _padded(line: np.ndarray, values: np.ndarray, rows: np.ndarray, lines: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat (line, value, row) candidates as (lines x most) arrays, ordered by line (empty: -inf and NO_ROW)."""
    order = np.argsort(line, kind="stable")
    line, values, rows = line[order], values[order], rows[order]
    counts = np.bincount(line, minlength=lines)
    most = int(counts.max(initial=0))
    out_v = np.full((lines, most), -np.inf, dtype=np.float32)
    out_i = np.full((lines, most), NO_ROW, dtype=np.int64)
    slot = np.arange(len(line)) - np.repeat(np.cumsum(counts) - counts, counts)
    out_v[line, slot], out_i[line, slot] = values, rows
    return out_v, out_i


class _Kept:
    """Per query line, the k best (score, row) merged so far, and the candidates found since the last merge.

    A block's candidates are its scores strictly above the line's k-th kept score (`floor`); they wait in flat
    arrays and are merged once there are about k per line (or at the end), so that few merges carry the floor
    up. The floor lags behind between merges, which only lets more candidates in: the result stays exact.
    """

    def __init__(self, lines: int, k: int) -> None:
        self.k = k
        self.values = np.full((lines, k), -np.inf, dtype=np.float32)
        self.rows = np.full((lines, k), NO_ROW, dtype=np.int64)
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.waiting = 0
        self.last_per_line = 0.0  # candidates per line of the last block added

    def take_first(self, block: np.ndarray, mask: np.ndarray) -> None:
        """The first block (corpus rows from 0, wider than k): its own top k. Where the block holds more than k
        groups of FIRST_GROUP columns, the k-th largest group maximum is a floor that at least k scores reach, so
        only the scores at or above it are selected from (a top-k of the whole block costs ~3x more)."""
        lines, width = block.shape
        if width % FIRST_GROUP or width // FIRST_GROUP <= self.k:
            self.values, self.rows = _block_best(block, self.k)
            return
        maxima = torch.from_numpy(block).view(lines, width // FIRST_GROUP, FIRST_GROUP).amax(-1)
        floor = torch.topk(maxima, self.k, dim=1).values[:, -1:].numpy()
        np.greater_equal(block, floor, out=mask)  # at or above: nothing is kept yet, so a tie may still enter
        line, col = np.divmod(np.flatnonzero(mask), width)
        cand_v, cand_i = _padded(line, block[line, col], col, lines)
        self.values, self.rows = _merge(self.values, self.rows, cand_v, cand_i, self.k)

    def add(self, block: np.ndarray, c0: int, mask: np.ndarray) -> None:
        """Queue the block's scores above the floor (`mask`: a bool buffer of the block's shape)."""
        floor = torch.from_numpy(self.values[:, -1:])
        scores = torch.from_numpy(block)
        width = block.shape[1]
        # screening pays when few groups pass: skip it while the last block had many candidates per line
        if width % GROUP == 0 and self.last_per_line * GROUP * 4 < width:
            groups = scores.view(len(block), width // GROUP, GROUP)
            line, group = torch.nonzero(groups.amax(-1) > floor, as_tuple=True)
            if len(line) * GROUP < block.size // 4:
                hit = groups[line, group]
                at, offset = torch.nonzero(hit > floor[line], as_tuple=True)
                line = line[at]
                found = (line.numpy(), hit[at, offset].numpy(), (group[at] * GROUP + offset).numpy() + c0)
                self._queue(found, len(block))
                return
        np.greater(block, self.values[:, -1:], out=mask)
        line, col = np.divmod(np.flatnonzero(mask), width)
        self._queue((line, block[line, col], col + c0), len(block))

    def _queue(self, found: tuple[np.ndarray, np.ndarray, np.ndarray], lines: int) -> None:
        self.last_per_line = len(found[0]) / max(lines, 1)
        if len(found[0]):
            self.pending.append(found)
            self.waiting += len(found[0])
        if self.waiting >= self.values.size:  # k per line: fewer merges beat a floor that rises sooner
            self.merge()

    def merge(self) -> None:
        """Merge the queued candidates into the kept k."""
        if not self.pending:
            return
        line, values, rows = (np.concatenate(parts) for parts in zip(*self.pending))
        cand_v, cand_i = _padded(line, values, rows, len(self.values))
        self.values, self.rows = _merge(self.values, self.rows, cand_v, cand_i, self.k)
        self.pending, self.waiting = [], 0


def blocked_top_k(
    query_emb: np.ndarray,
    corpus_emb: np.ndarray,
    query_rows: np.ndarray | None,
    k: int,
    chunk_size: int,
    query_chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k corpus rows (and their scores) per query by dot product, best first, ties to the lower row.

    `query_rows[i]` is query i's own corpus row, excluded from its results (None: nothing excluded); k is capped
    at the rows left. Blocks of `query_chunk` queries x `chunk_size` corpus rows; the result does not depend on
    them.
    """
    n_corpus = len(corpus_emb)
    k = max(0, min(int(k), n_corpus - (query_rows is not None)))
    idx = np.empty((len(query_emb), k), dtype=np.int64)
    scores = np.empty((len(query_emb), k), dtype=np.float32)
    if k == 0 or len(query_emb) == 0:
        return idx, scores
    for q0 in range(0, len(query_emb), query_chunk):
        q = query_emb[q0 : q0 + query_chunk]
        own = None if query_rows is None else np.asarray(query_rows[q0 : q0 + query_chunk])
        kept = _Kept(len(q), k)
        mask = np.empty((len(q), min(chunk_size, n_corpus)), dtype=bool)
        for c0, block in score_blocks(q, corpus_emb, chunk_size):
            if own is not None:
                inside = np.flatnonzero((own >= c0) & (own < c0 + block.shape[1]))
                block[inside, own[inside] - c0] = -np.inf
            if c0 == 0 and block.shape[1] > k:
                kept.take_first(block, mask[:, : block.shape[1]])
            else:
                kept.add(block, c0, mask[:, : block.shape[1]])
        kept.merge()
        best_v, best_i = kept.values, kept.rows  # best first (torch.topk's order) ...
        tied = np.flatnonzero((best_v[:, 1:] == best_v[:, :-1]).any(axis=1))
        if len(tied):  # ... and equal scores by row
            best_v[tied], best_i[tied] = exact_top_k(best_v[tied], best_i[tied], k)
        idx[q0 : q0 + len(q)], scores[q0 : q0 + len(q)] = best_i, best_v
    return idx, scores


def pairs_at_least(embeddings: np.ndarray, threshold: float, chunk_size: int) -> Iterator[tuple[int, int, float]]:
    """Every pair i < j with cosine >= threshold, one block of rows against the rows from there on (the upper
    triangle only), ascending by (i, j)."""
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    for r0 in range(0, len(emb), chunk_size):
        rows = emb[r0 : r0 + chunk_size]
        for c0, block in score_blocks(rows, emb, len(emb), start=r0):
            line, col = np.divmod(np.flatnonzero(block >= threshold), block.shape[1])
            i, j = line + r0, col + c0
            keep = j > i
            yield from zip(i[keep].tolist(), j[keep].tolist(), block[line[keep], col[keep]].tolist())
