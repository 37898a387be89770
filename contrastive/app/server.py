"""The wiring: settings -> checkpoint and thresholds -> models -> engine and index -> UI -> server, and the
`python -m contrastive.app` entry point (Hydra composes conf/app.yaml; every config check runs first)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from contrastive.app.checkpoints import find_checkpoint, load_thresholds
from contrastive.app.engine import Engine, encoder
from contrastive.app.index import BackgroundIndex, Examples, build_index, corpus_and_examples
from contrastive.app.settings import AppBlock, AppSettings, load_app
from contrastive.app.ui import CSS, build_ui, header_markdown, in_flight, remove_csv_dirs, threshold_label
from contrastive.errors import ConfigError, UserError
from contrastive.search import Limits

log = logging.getLogger("contrastive.app")  # one logger for the whole app package


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port(host: str, port: int | None) -> int:
    """The port to serve on: app.port if it can be bound now (else a one-line ConfigError), a free one if 0/null."""
    if not port:
        return free_port(host)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a just-stopped app's
        try:  # connections in TIME_WAIT do not make the port busy, a listening server does
            sock.bind((host, int(port)))
        except OSError as exc:
            raise ConfigError(
                f"app.port={port}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                "stop what uses it, or pass app.port=0 for a free port"
            ) from None
    return int(port)


def create_app(settings: AppSettings):
    """Everything but the server: find and load the models, read thresholds, start indexing, build the UI."""
    from contrastive.model import backend_args, fingerprint, load_model, named_key, use_cache_dir

    app = settings.app
    use_cache_dir(settings.paths.cache_dir)  # a models:/ checkpoint downloads there, not into the project
    checkpoint = find_checkpoint(settings.checkpoint, settings.paths.output_root)
    thresholds = load_thresholds(checkpoint.path, float(app.fallback_threshold))
    baseline_name = str(settings.model.name_or_path)
    device = app.device or None
    print(
        f"serving: {checkpoint.path or baseline_name + ' (untuned baseline; ' + checkpoint.note + ')'}"
        f" [{checkpoint.source}]",
        flush=True,
    )
    print(
        f"thresholds: fine-tuned {thresholds.finetuned:.4f}, baseline {thresholds.baseline:.4f} "
        f"({threshold_label(thresholds)}{': ' + thresholds.note if thresholds.note else ''})",
        flush=True,
    )

    backend = backend_args(settings.model)
    baseline = load_model(baseline_name, settings.model.max_seq_length, device, **backend)
    if checkpoint.path is None:
        served, served_name, embed_baseline = baseline, baseline_name, None
    else:
        with named_key("checkpoint"):  # an error names the key the user typed
            served, served_name = load_model(checkpoint.path, None, device, **backend), checkpoint.path
        embed_baseline = encoder(baseline, int(app.batch_size))
    embed = encoder(served, int(app.batch_size))
    served_fp = fingerprint(served_name)
    model_key = {"model": served_fp, "max_seq_length": int(served.max_seq_length), "backend": backend["backend"]}

    limits = Limits(
        int(app.limits.max_chars), int(app.limits.max_questions), int(float(app.limits.max_upload_mb) * 1_000_000)
    )
    try:
        texts, description, examples = corpus_and_examples(app.corpus, settings.data)
        index = BackgroundIndex(
            partial(build_index, embed, texts, description, str(app.cache_dir), model_key), description, len(texts)
        ).start()
    except UserError as exc:
        log.warning("no default search corpus: %s", exc)
        print(f"warning: no default search corpus: {exc}", flush=True)
        index = BackgroundIndex.failed(f"no default search corpus ({exc}); upload a CSV/TXT instead")
        examples = Examples()

    names = {
        "finetuned": f"fine-tuned · {Path(checkpoint.path).parent.name + '/' + Path(checkpoint.path).name}"
        if checkpoint.path
        else f"untuned baseline · {baseline_name}",
        "baseline": f"untuned baseline · {baseline_name.rsplit('/', 1)[-1]}",
    }
    engine = Engine(
        embed,
        embed_baseline,
        thresholds,
        limits,
        index,
        int(app.top_k),
        int(app.max_top_k),
        int(app.chunk_size),
        baseline_max_questions=int(app.dedup_baseline_max),
        names=names,
    )
    header = header_markdown(
        checkpoint, baseline_name, thresholds, served_fp if checkpoint.path else None, backend["backend"]
    )
    return build_ui(engine, header, examples=examples), engine


class BodyLimit:
    """ASGI middleware: an HTTP request whose body exceeds `max_bytes` gets 413 before anything parses it (by its
    Content-Length at once, else as soon as the streamed body passes the limit)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, int(max_bytes)

    async def refuse(self, send: Any) -> None:
        body = f"request body over {self.max_bytes:,} bytes (app.limits.max_request_mb)".encode()
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self.refuse(send)
        seen, refused = 0, False

        async def counted() -> Any:  # the app reads the body through this; past the limit it is told the client left
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes and not refused:
                refused = True
                await self.refuse(send)  # answered here: the app may catch what its body read raises (a 400)
            return {"type": "http.disconnect"} if refused else message

        async def guarded(message: Any) -> None:  # nothing the app sends after the 413 reaches the client
            if not refused:
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not refused:
                raise


def configure_queue(demo: Any, queue: Any) -> Any:
    """Gradio's request queue from `app.queue`: at most max_size waiting (more are refused at once), `concurrency`
    running per kind of request (search, dedup, ...), so one long dedup does not hold up searches."""
    return demo.queue(max_size=int(queue.max_size), default_concurrency_limit=int(queue.concurrency))


FOOTER_LINKS = ["api", "gradio"]  # "Use via API" (its page is ?view=api, shown only with this link) and the credit


def launch_options(app: AppBlock, port: int) -> dict[str, Any]:
    """`demo.launch`'s arguments from the `app` block: bind, limits (upload size, request body), page look."""
    import gradio as gr
    from starlette.middleware import Middleware

    limit = int(float(app.limits.max_request_mb) * 1_000_000)
    return {
        "app_kwargs": {"middleware": [Middleware(BodyLimit, max_bytes=limit)]},
        "server_name": str(app.host),
        "server_port": port,
        "share": bool(app.share),
        "inbrowser": False,
        "ssr_mode": False,
        "max_file_size": int(float(app.limits.max_upload_mb) * 1_000_000),
        "show_error": True,
        "quiet": True,
        "prevent_thread_lock": True,
        "theme": gr.themes.Soft(),
        "css": CSS,
        "footer_links": FOOTER_LINKS,
    }


class QuietCut(logging.Filter):
    """Drops uvicorn's traceback of a request that `bound_shutdown` cut (its task cancelled): the cut is meant, and
    uvicorn's one line "Cancel N running task(s), timeout graceful shutdown exceeded" already says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


def bound_shutdown(demo: Any, grace_s: float) -> None:
    """A launched demo's server stops within `grace_s` of closing, cutting requests still running: uvicorn otherwise
    waits for each open connection, and Gradio's stream of a running request checks for a stop only every 10 s
    (Gradio gives up on the server thread after 5 s), so SIGTERM during a dedup took > 10 s."""
    demo.server.config.timeout_graceful_shutdown = grace_s  # read by uvicorn's shutdown, after the launch
    cut = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, QuietCut) for f in cut.filters):
        cut.addFilter(QuietCut())


def stop_work(engine: Engine, grace_s: float) -> bool:
    """Wait, up to `grace_s` in all, for the requests running and the corpus encode to stop: after a SIGTERM each
    encode stops at its next batch (contrastive.stop), and a process that exits with a thread still inside the
    model aborts (SIGABRT, "terminate called without an active exception"). Whether all stopped."""
    deadline = time.monotonic() + grace_s
    stopped = in_flight.wait_idle(grace_s) and engine.index.idle(max(0.0, deadline - time.monotonic()))
    if not stopped:
        log.warning("stopping with work still running after app.shutdown_grace_s=%s", grace_s)
    return stopped


def serve(settings: AppSettings) -> None:
    """Build the app and serve it (blocking) on app.host:app.port, with Gradio's public link only if app.share."""
    app = settings.app
    port = check_port(str(app.host), app.port)  # before any model is loaded: a busy port fails in a second
    demo, engine = create_app(settings)
    configure_queue(demo, app.queue)
    try:
        demo.launch(**launch_options(app, port))
    except OSError as exc:  # taken between the check and the launch
        raise ConfigError(f"app.port={port}: cannot listen on {app.host}:{port} ({str(exc).splitlines()[0]})") from None
    bound_shutdown(demo, float(app.shutdown_grace_s))
    print(f"app: http://{app.host}:{port}", flush=True)
    try:
        demo.block_thread()
    finally:  # Ctrl-C, SIGTERM (unwound by contrastive.cli) or a crash: this process's download dirs go
        remove_csv_dirs()
        stop_work(engine, float(app.shutdown_grace_s))
        demo.close()  # uvicorn cuts a connection still open after the grace (bound_shutdown)


def main() -> None:
    """`python -m contrastive.app [overrides]`: Hydra composes conf/app.yaml, then the app serves."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from contrastive.cli import hydra_app, user_errors

    @hydra_app("app")
    def _main(cfg: DictConfig) -> None:
        with user_errors():
            serve(load_app(cfg))  # every config check, before any model or data is loaded

    try:
        _main()
    finally:  # the process ends here: exempt every object from the interpreter's final garbage collection, which
        gc.freeze()  # walks torch's, transformers' and gradio's millions (~1.5 s of a SIGTERM's exit) to free nothing
