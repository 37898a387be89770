"""The export entry point: a saved model's ONNX files into its own onnx/ folder (conf/export.yaml).

`python -m contrastive.export checkpoint=DIR [format=onnx|onnx-int8]` (or `contrastive-export ...`) writes
`DIR/onnx/model.onnx` (fp32) and, for onnx-int8, `DIR/onnx/model_int8_per_channel.onnx`, where
`SentenceTransformer(DIR, backend="onnx", model_kwargs={"file_name": "onnx/<file>"})` looks; `model.backend=onnx*`
(evaluation, the app) loads the same files. The export itself is contrastive.model's (one implementation).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from contrastive.cli import hydra_app, user_errors
from contrastive.settings import ExportSettings, load_export

CHECK_TEXTS = [
    "How do I learn Python quickly?",
    "What is the best way to learn Python?",
    "Why is the sky blue?",
    "How can I lose weight without dieting?",
]


def export(settings: ExportSettings) -> tuple[Path, float | None]:
    """Write the ONNX file of `settings.format` into the checkpoint's onnx/; returns its path and, with `check`,
    the largest cosine gap between torch's and the export's embeddings of a few questions."""
    import numpy as np

    from contrastive.model import encode, load_model, onnx_dir, onnx_file, use_onnx

    checkpoint = str(Path(settings.checkpoint).expanduser())
    max_len = settings.model.max_seq_length
    model = load_model(checkpoint, max_len, "cpu")
    reference = encode(model, CHECK_TEXTS, len(CHECK_TEXTS), show_progress=False) if settings.check else None
    path = onnx_file(model, onnx_dir(checkpoint, checkpoint, None, own=True), settings.format)
    if reference is None:
        return path, None
    exported = encode(use_onnx(model, path), CHECK_TEXTS, len(CHECK_TEXTS), show_progress=False)
    return path, float(np.max(1.0 - np.sum(reference * exported, axis=1)))


def run(cfg: DictConfig) -> Path:
    """Export, print where the file is, how to load it, and the check."""
    settings = load_export(cfg)  # every config check, before the model loads
    path, gap = export(settings)
    folder = path.parent.parent
    print(f"wrote {path}", flush=True)
    if gap is not None:
        print(f"check: largest cosine gap to torch fp32 over {len(CHECK_TEXTS)} questions: {gap:.2e}", flush=True)
    print(
        f'load: SentenceTransformer("{folder}", backend="onnx", model_kwargs={{"file_name": "onnx/{path.name}"}})',
        flush=True,
    )
    return path


@hydra_app("export")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    main()
