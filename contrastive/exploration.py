"""Recorded hand-run runs (results/exploration/*.jsonl) as a sweep's warm start needs them: each record gets the
identity its metrics were measured under, computed from its own overrides by the functions the train job uses:
`eval_protocol` (train.eval_protocol), `data_fingerprint` (data.prepare) and `data_max_pairs` (the train cap).

    python -m contrastive.exploration results/exploration/cpu_runs.jsonl   # rewrites the file in place

A record whose overrides do not compose, or that has none of the data / eval overrides a full run needs (the GPU
runs record only their swept params), is left as it is, and a warm start skips it ("no eval_protocol").
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

IDENTITY_KEYS = ("eval_protocol", "data_fingerprint", "data_max_pairs")


def record_identity(overrides: list[str]) -> dict[str, Any]:
    """What a run's metrics are comparable on: its evaluation protocol, data fingerprint and train cap."""
    from contrastive.cli import compose_config
    from contrastive.data import prepare
    from contrastive.settings import load_train
    from contrastive.train import eval_protocol

    settings = load_train(compose_config(list(overrides)))
    return {
        "eval_protocol": eval_protocol(settings.eval),
        "data_fingerprint": prepare(settings.data).fingerprint,
        "data_max_pairs": settings.data.max_pairs,
    }


def annotate(path: Path) -> int:
    """Add the identity to every record of a JSONL file that names its data and evaluation; how many got one."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    done = 0
    for record in records:
        overrides = list(record.get("overrides") or [])
        if not any(o.startswith("data=") for o in overrides) or not any(o.startswith("eval.") for o in overrides):
            continue
        record.update(record_identity(overrides))
        done += 1
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return done


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    for name in sys.argv[1:]:
        print(f"{name}: {annotate(Path(name))} record(s) annotated")
