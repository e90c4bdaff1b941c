from __future__ import annotations

import io
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from odpipe.synthetic import SyntheticSpec

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("circle", "square", "triangle")


@pytest.fixture
def spec() -> SyntheticSpec:
    """A small synthetic dataset spec, as the smoke experiment uses."""
    return SyntheticSpec(
        num_images=12,
        classes=CLASSES,
        seed=3,
        min_side=96,
        max_side=128,
        min_objects=1,
        max_objects=4,
        min_object_frac=0.15,
        max_object_frac=0.5,
        max_overlap=0.35,
    )


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves files, honouring ``Range: bytes=N-`` as real servers do; counts requests."""

    requests: list[str] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        RangeHandler.requests.append(self.headers.get("Range") or "full")
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving ``root``; yields its base URL."""
    RangeHandler.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def zoo_tarball(out: Path, name: str, pipeline_config: Path, checkpoint: Path, saved_model: Path | None) -> Path:
    """A tarball laid out as the TF2 Detection Zoo's: ``<name>/pipeline.config``,
    ``<name>/checkpoint/ckpt-0.*`` (with its state file) and ``<name>/saved_model/``.
    ``checkpoint`` is a checkpoint prefix such as ``models/train/ckpt-3``."""
    with tarfile.open(out, "w:gz") as tar:
        tar.add(pipeline_config, f"{name}/pipeline.config")
        for part in sorted(checkpoint.parent.glob(f"{checkpoint.name}.*")):
            tar.add(part, f"{name}/checkpoint/ckpt-0{part.suffix}")
        state = b'model_checkpoint_path: "ckpt-0"\nall_model_checkpoint_paths: "ckpt-0"\n'
        info = tarfile.TarInfo(f"{name}/checkpoint/checkpoint")
        info.size = len(state)
        tar.addfile(info, io.BytesIO(state))
        if saved_model is not None:
            tar.add(saved_model, f"{name}/saved_model")
    return out
