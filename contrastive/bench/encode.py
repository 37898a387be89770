"""Section `encode`: questions/s of plain SentenceTransformer.encode vs our encode on torch, ONNX fp32 and ONNX
int8, interleaved, with the val subset's MRR@10 of each."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from contrastive.bench.common import (
    Inputs,
    Row,
    backend_model,
    interleaved,
    note,
    padded_work,
    val_subset,
)
from contrastive.evaluation import score_embeddings, scoring_args  # the scoring
from contrastive.model import encode  # our encode


def encode_batches(char_lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Row indices of each encode batch of plain SentenceTransformer.encode: longest text (by characters)
    first, `batch_size` texts each."""
    order = np.argsort([-int(n) for n in char_lengths], kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


class RecordingModel:
    """Passes everything to `inner`, recording the texts of each `encode` call (one padded batch each, as
    model.encode calls it), so the bench counts the tokens our encode really processes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def encode(self, texts: Sequence[str], *args: Any, **kwargs: Any) -> Any:
        self.calls.append(list(texts))
        return self.inner.encode(texts, *args, **kwargs)


def section(inp: Inputs, record: dict[str, Any]) -> list[Row]:
    """Plain SentenceTransformer.encode vs our encode on torch / ONNX fp32 / ONNX int8, interleaved."""
    settings, b = inp.settings, inp.settings.bench.encode
    ev = settings.eval
    es = val_subset(inp.data, int(b.val_pairs), int(settings.bench.seed))
    texts = es.texts
    bs, plain_bs = int(ev.batch_size), int(b.plain_batch_size)
    start = time.perf_counter()
    onnx = {name: backend_model(settings.model, name) for name in ("onnx", "onnx-int8")}
    note(f"ONNX models ready in {time.perf_counter() - start:.1f} s (cache {settings.model.onnx_cache_dir})")

    def plain(m: Any) -> np.ndarray:
        return np.asarray(m.encode(texts, batch_size=plain_bs, normalize_embeddings=True, show_progress_bar=False))

    variants: dict[str, Callable[[], np.ndarray]] = {
        "plain": lambda: plain(inp.model),
        "ours_torch": lambda: encode(inp.model, texts, bs, False),
        "ours_onnx": lambda: encode(onnx["onnx"], texts, bs, False),
        "ours_onnx_int8": lambda: encode(onnx["onnx-int8"], texts, bs, False),
    }
    encode(inp.model, texts[:bs], bs, False)  # first-call costs out of the timings
    for m in onnx.values():
        encode(m, texts[:bs], bs, False)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    embeddings: dict[str, np.ndarray] = {}
    for rep, name in interleaved(list(variants), int(b.reps)):
        start = time.perf_counter()
        emb = variants[name]()
        seconds[name].append(time.perf_counter() - start)
        embeddings.setdefault(name, emb)
        note(f"encode rep {rep} {name}: {len(texts) / seconds[name][-1]:.0f} q/s")
    k = f"mrr_at_{int(ev.k)}"
    metrics = {name: score_embeddings(emb, es, **scoring_args(ev)).metrics for name, emb in embeddings.items()}
    tokens = inp.count_tokens(texts)
    recorder = RecordingModel(inp.model)
    encode(recorder, texts, bs, False)  # the batches our encode forms (untimed)
    ours_batches = [inp.count_tokens(call) for call in recorder.calls]
    work = {
        "plain": padded_work(tokens, encode_batches([len(t) for t in texts], plain_bs), inp.shape),
        "ours": padded_work(
            [n for call in ours_batches for n in call],
            np.split(np.arange(len(texts)), np.cumsum([len(c) for c in ours_batches])[:-1]),
            inp.shape,
        ),
    }
    rate = {name: len(texts) * len(s) / sum(s) for name, s in seconds.items()}
    record["encode"] = {
        "questions": len(texts),
        "seconds": seconds,
        "q_per_s": rate,
        "metrics": metrics,
        "work": work,
        "batch_size": bs,
        "plain_batch_size": plain_bs,
        "ours_batches": len(ours_batches),
        "padding": {name: w["padded_tokens"] / w["useful_tokens"] for name, w in work.items()},
    }
    ref = metrics["ours_torch"][k]
    rows = []
    labels = {
        "ours_torch": "ours (model.encode, torch fp32)",
        "ours_onnx": "ours on ONNX Runtime fp32",
        "ours_onnx_int8": "ours on ONNX Runtime dynamic int8 (per-channel MatMul)",
    }
    for i, (name, label) in enumerate(labels.items()):
        per_rep = [p / q for p, q in zip(seconds["plain"], seconds[name])]  # same texts: time ratio = rate ratio
        ratio = float(np.median(per_rep))
        drop = ref - metrics[name][k]
        onnx_row = name != "ours_torch"
        w = work["ours"]
        per_q = w["flops"] / len(texts)
        rows.append(
            {
                "row": f"2{'abc'[i]}",
                "what": f"encode questions/s: {label} vs plain SentenceTransformer.encode "
                f"(bs {plain_bs}), {len(texts):,} val questions "
                f"({len(es.queries):,} queries)",
                "a": rate[name],
                "b": rate["plain"],
                "ratio": ratio,
                "target": f">= 2x, {k} within {b.max_mrr_drop}" if onnx_row else None,
                "met": (ratio is not None and ratio >= 2 and abs(drop) <= float(b.max_mrr_drop)) if onnx_row else None,
                "quality": f"{k} {metrics[name][k]:.4f} (torch {ref:.4f}, diff {-drop:+.4f}); pair AP "
                f"{metrics[name]['pair_ap']:.4f}; per-rep ratios {', '.join(f'{x:.2f}' for x in per_rep)}; "
                f"padding x{record['encode']['padding']['ours']:.2f} vs "
                f"x{record['encode']['padding']['plain']:.2f}",
                "peak": [
                    rate[name] * per_q,
                    " fp32-equivalent" if name == "ours_onnx_int8" else "",
                    " vs ",
                    rate["plain"] * work["plain"]["flops"] / len(texts),
                ],
            }
        )
    return rows
