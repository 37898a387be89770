"""`make bench` / `python -m contrastive.bench [overrides]`: how fast our paths run, as ratios, beside their quality.

Rows (conf/bench.yaml, `bench.sections`; one module of this package each):
  peak       this machine's fp32 matmul GFLOP/s (2 and 1 threads, at the start and the end); every throughput
             is also shown as a share of the best of those
  train      pairs/s of our training path (component sampler, length grouping, thread setting) vs a plain
             SentenceTransformerTrainer script (MNRL, NO_DUPLICATES), same pairs and batch size, interleaved
             short runs, decomposed (grouping alone, sampler alone, threads alone); then one epoch each of
             ungrouped vs grouped, scored on a val subset with bootstrap CIs
  encode     questions/s of plain SentenceTransformer.encode vs our encode on torch, ONNX fp32, ONNX int8,
             interleaved, with the val subset's MRR@10 of each
  eval_cost  wall time and peak memory of scoring 10k / 50k / 100k questions (synthetic embeddings, one
             subprocess per size), and the cached baseline's second evaluation as a share of its first
  search     p50 / p95 latency of a top-10 search over a 100k-question CorpusIndex (the app's index)
  sweep      the same small seeded sweep without pruning and with each configured pruner: wall time, best value
             and a train job's set-up in a fresh worker process, first trial vs later (what a sweep pays per trial)
  protocol   the proof's and the app's costly steps on the real data: the all-distractor test evaluation of one
             model, hard-negative mining over the train split, the app's 5,000-question dedup per backend
Every figure comes from this one run on this machine; a shared machine is noisy, so variants alternate.
Shared pieces: common.py (inputs, FLOP counting, timing, CIs), report.py (the table and the facts under it).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from contrastive.bench.settings import BENCH_SECTIONS, BenchSettings, load_bench
from contrastive.cli import hydra_app, user_errors
from contrastive.settings import as_dict

SECTIONS = tuple(name for name in BENCH_SECTIONS if name != "peak")  # the sections that return rows


def run(settings: BenchSettings) -> dict[str, Any]:
    """Every configured section; prints the markdown table and writes the JSON record."""
    from contrastive.bench import peak
    from contrastive.bench.common import load_inputs, note
    from contrastive.bench.report import footer, machine_facts, markdown_table, render_shares
    from contrastive.utils import numpy_default, write_json

    b = settings.bench
    started = time.perf_counter()
    record: dict[str, Any] = {"settings": machine_facts(), "config": as_dict(b)}
    inp = load_inputs(settings)
    record["source"] = inp.source_note
    record["shape"] = as_dict(inp.shape)
    if "peak" in b.sections:
        peak.measure(inp, b.peak)
    rows = []
    for name in b.sections:
        if name == "peak":
            continue
        clock = time.perf_counter()
        note(f"section {name} ...")
        rows += importlib.import_module(f"contrastive.bench.{name}").section(inp, record)
        record.setdefault("section_seconds", {})[name] = time.perf_counter() - clock
    if "peak" in b.sections:
        peak.measure(inp, b.peak)
        rows.insert(0, peak.peak_row(inp, b.peak, record))
    for row in rows:
        row["peak"] = render_shares(row.get("peak"), inp.peak_flops)
    record["rows"] = rows
    record["wall_s"] = time.perf_counter() - started
    record["settings"]["load_avg_end"] = os.getloadavg()
    print(markdown_table(rows))
    print(f"\n{footer(record)}", flush=True)
    out = Path(b.output).expanduser()
    write_json(record, out, default=numpy_default)
    print(f"wrote {out}", flush=True)
    return record


@hydra_app("bench")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    with user_errors():
        run(load_bench(cfg))  # every config check, before any data is read or any model loaded
