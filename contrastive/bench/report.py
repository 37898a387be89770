"""The bench's output: the markdown table of its rows, each row's share of the measured peak, and the machine
and library facts printed under the table."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from contrastive.bench.common import safe_ratio
from contrastive.utils import fmt_cell

TABLE_COLUMNS = (
    ("row", "row"),
    ("what", "compares (A vs B)"),
    ("a", "A"),
    ("b", "B"),
    ("ratio", "ratio A/B"),
    ("target", "target"),
    ("met", "met"),
    ("quality", "quality beside it"),
    ("peak", "% of fp32 peak"),
)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One markdown table of the bench rows (missing cells as a dash; pipes in cells escaped)."""

    def cell(row: Mapping[str, Any], key: str) -> str:
        value = row.get(key)
        text = fmt_cell(value, 2) + "x" if key == "ratio" and isinstance(value, float) else fmt_cell(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(title for _, title in TABLE_COLUMNS) + " |",
        "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(cell(row, key) for key, _ in TABLE_COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def share(flops_per_s: float | None, peak_flops_per_s: float | None) -> str:
    """`flops_per_s` as a percentage of the machine's measured fp32 matmul rate."""
    ratio = safe_ratio(flops_per_s, peak_flops_per_s)
    return "-" if ratio is None else f"{100 * ratio:.1f}%"


def render_shares(parts: Any, peak_flops_per_s: float | None) -> Any:
    """A row's peak cell from its parts: text as is, numbers (FLOP/s) as shares of the final peak, which is only
    known once the run has measured it again at the end."""
    if not isinstance(parts, list):
        return parts
    return "".join(p if isinstance(p, str) else share(p, peak_flops_per_s) for p in parts)


def machine_facts() -> dict[str, Any]:
    """Machine and library facts printed under the table."""
    import platform

    import sentence_transformers
    import torch

    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:  # pragma: no cover - optional extra
        ort = None
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "onnxruntime": ort,
    }


def footer(record: Mapping[str, Any]) -> str:
    """The line under the table: where the data came from, the machine, its load, the bench's wall time."""
    facts = record["settings"]
    return (
        f"{record['source']}; {facts['cpus']} CPUs, torch {facts['torch']} "
        f"({facts['torch_threads']} threads), onnxruntime {facts['onnxruntime']}; "
        f"load average {facts['load_avg_start'][0]:.1f} -> {facts['load_avg_end'][0]:.1f}; "
        f"bench wall time {record['wall_s'] / 60:.1f} min"
    )
