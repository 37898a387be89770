"""Section `search`: p50 / p95 latency of a top-10 search over a 100k-question CorpusIndex (the app's index), and
of the query's encode plus that search on torch and ONNX int8."""

from __future__ import annotations

import time
from typing import Any

from contrastive.bench.common import Inputs, Row, backend_model, percentiles, unit_vectors
from contrastive.model import encode  # the app's query encode
from contrastive.search import CorpusIndex


def section(inp: Inputs, record: dict[str, Any]) -> list[Row]:
    """p50 / p95 of single-question top-k searches over the app's CorpusIndex; and encode + search end to end."""
    settings, b = inp.settings, inp.settings.bench.search
    n, k = int(b.corpus), int(b.k)
    index = CorpusIndex([f"q{i}" for i in range(n)], unit_vectors(n, 384, int(settings.bench.seed)))
    queries = unit_vectors(int(b.queries) + int(b.warmup), 384, int(settings.bench.seed) + 1)
    latencies = []
    for i, q in enumerate(queries):
        start = time.perf_counter()
        index.search(q, k)
        if i >= int(b.warmup):
            latencies.append((time.perf_counter() - start) * 1e3)
    search_ms = percentiles(latencies)
    texts = inp.eval_set.texts[: int(b.encode_queries)]
    end_to_end = {}
    for backend in ("torch", "onnx-int8"):
        model = inp.model if backend == "torch" else backend_model(settings.model, backend)
        encode(model, texts[:1], 1, False)
        times = []
        for text in texts:
            start = time.perf_counter()
            index.search(encode(model, [text], 1, False), k)
            times.append((time.perf_counter() - start) * 1e3)
        end_to_end[backend] = percentiles(times)
    record["search"] = {
        "corpus": n,
        "k": k,
        "search_ms": search_ms,
        "search_ms_all": latencies,
        "encode_plus_search_ms": end_to_end,
    }
    flops = 2.0 * n * 384 / (search_ms["p50"] / 1e3)
    return [
        {
            "row": "5",
            "what": f"app search: top-{k} over a {n:,}-question CorpusIndex (synthetic unit embeddings), "
            f"{len(latencies)} single queries: p50 / p95 ms",
            "a": f"{search_ms['p50']:.1f} / {search_ms['p95']:.1f} ms",
            "target": "p95 <= 30 ms",
            "met": search_ms["p95"] <= 30,
            "quality": "with the query's encode: torch {:.0f} / {:.0f} ms, onnx-int8 {:.0f} / {:.0f} ms".format(
                end_to_end["torch"]["p50"],
                end_to_end["torch"]["p95"],
                end_to_end["onnx-int8"]["p50"],
                end_to_end["onnx-int8"]["p95"],
            ),
            "peak": [flops, " (the p50 search's matmul)"],
        }
    ]
