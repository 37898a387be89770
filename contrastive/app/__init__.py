"""The Gradio app: `python -m contrastive.app` serves the best checkpoint beside the untuned baseline.

Tabs: Compare (two questions -> cosine and a duplicate verdict at the calibrated threshold), Search (top-k
similar questions of an indexed corpus) and Deduplicate (groups of duplicates in a list). Everything a tab
does is a method of `Engine`, testable without a browser or a model; `build_ui` only wires components.

One concern per module:
- checkpoints.py: which checkpoint is served, and its duplicate thresholds from metrics.json
- index.py: the default corpus, its search index (embedding cache, built on a background thread), the examples
- engine.py: `Engine` (compare / search / dedup over two encoders) and `encoder` (model -> texts -> embeddings)
- ui.py: HTML/markdown rendering, the CSS, the Gradio Blocks and the JSON API (gradio imported when building)
- server.py: the wiring (settings -> models -> engine -> UI -> server) and the entry point `main`
"""

from contrastive.app.server import create_app, free_port, main, serve

__all__ = ["create_app", "free_port", "main", "serve"]
