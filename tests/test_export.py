"""`python -m contrastive.export`: ONNX files in the checkpoint's own onnx/, where sentence-transformers looks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import run_module

from contrastive.model import ONNX_STAMP, encode, fingerprint, load_model

TEXTS = ["How do I learn Python?", "What is the best way to learn Python quickly?", "Why is the sky blue?"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, minilm) -> Path:
    """A saved checkpoint (the untuned model) with both ONNX files written by the export command."""
    pytest.importorskip("onnxruntime")
    checkpoint = tmp_path_factory.mktemp("ckpt") / "model"
    minilm.save(str(checkpoint))
    proc = run_module(
        "contrastive.export",
        f"checkpoint={checkpoint}",
        "format=onnx-int8",
        f"paths.output_root={checkpoint.parent}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {checkpoint / 'onnx' / 'model_int8_per_channel.onnx'}" in proc.stdout
    assert "check: largest cosine gap to torch fp32" in proc.stdout
    return checkpoint


@pytest.mark.slow
def test_export_writes_into_the_checkpoints_onnx_folder_and_our_loader_uses_it(exported, tmp_path):
    files = sorted(p.name for p in (exported / "onnx").iterdir())
    assert files == sorted(["model.onnx", "model_int8_per_channel.onnx", ONNX_STAMP])
    assert (exported / "onnx" / ONNX_STAMP).read_text().strip() == fingerprint(str(exported))
    reference = encode(load_model(str(exported), 128), TEXTS, 3, show_progress=False)
    model = load_model(str(exported), 128, backend="onnx-int8", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # the checkpoint's own onnx/ served it: nothing exported again
    assert (encode(model, TEXTS, 3, show_progress=False) * reference).sum(axis=1).min() > 0.97


@pytest.mark.slow
@pytest.mark.parametrize(
    ("file_name", "floor"), [("onnx/model.onnx", 0.9999), ("onnx/model_int8_per_channel.onnx", 0.97)]
)
def test_sentence_transformers_loads_the_export_with_its_onnx_backend(exported, file_name, floor):
    """The ecosystem's own loader, no project code: SentenceTransformer(DIR, backend="onnx", file_name=...)."""
    pytest.importorskip("optimum.onnxruntime", reason="sentence-transformers' ONNX backend needs optimum (README)")
    from sentence_transformers import SentenceTransformer

    torch_emb = SentenceTransformer(str(exported), device="cpu").encode(TEXTS, normalize_embeddings=True)
    onnx = SentenceTransformer(str(exported), backend="onnx", model_kwargs={"file_name": file_name})
    onnx_emb = onnx.encode(TEXTS, normalize_embeddings=True)
    assert onnx_emb.shape == torch_emb.shape
    assert np.sum(onnx_emb * torch_emb, axis=1).min() > floor


def test_export_refuses_what_is_not_a_saved_model(tmp_path):
    proc = run_module("contrastive.export", f"checkpoint={tmp_path}", f"paths.output_root={tmp_path}")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: checkpoint={str(tmp_path)!r}: no modules.json: not a SentenceTransformer"
    ]
    proc = run_module("contrastive.export", f"paths.output_root={tmp_path}")
    assert proc.returncode == 2 and "checkpoint: missing" in proc.stderr
