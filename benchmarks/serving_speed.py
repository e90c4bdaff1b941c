"""Serving: what ``mlflow models serve`` costs per image against calling the model in-process.

The export (``make repro`` first, or ``--model``) is registered in a temporary MLflow store and
served by ``mlflow models serve`` (one worker); one image per request, the same images each sent
``--repeats`` times (each image through the three sequential rows in turn, so that the shared
machine's noise hits them alike), it prints requests/s and p50/p99 latency of:
- the SavedModel in-process: the file read as ``odpipe predict`` reads it, then ``detect``;
- the pyfunc model in-process (``mlflow.pyfunc.load_model``): what the server runs per request,
  MLflow's schema check and the DataFrames in and out included, without HTTP and JSON;
- the server at 1 client (sequential) and at 4 concurrent clients;
and each p50 against the SavedModel's (goal: served p50 <= 1.2x in-process at 1 client).
Images: the test split of the project the export sits in (its paths.convert/test.csv and
paths.clean_images), or every *.jpg/*.png of ``--image-dir``.
Usage: python benchmarks/serving_speed.py [--model DIR] [--image-dir DIR] [--images N] [--repeats N]
    [hydra overrides ...]
"""

from __future__ import annotations

import argparse
import base64
import csv
import http.client
import json
import os
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from harness.runs import ROOT, exported_model

from odpipe.core.images import readable_bytes
from odpipe.core.runtime import compose_config
from odpipe.detect.detectors import load_detector
from odpipe.detect.evaluate import detect
from odpipe.detect.serve import DEFAULT_MIN_SCORE, log_model
from odpipe.devtools.servers import scoring_server
from odpipe.engine.mlflow_runs import create_run, global_tracking_uri, open_client, register_version
from odpipe.engine.pyfunc import IMAGE

NAME = "odpipe-detector"
SUFFIXES = (".jpg", ".jpeg", ".png")
WARM_UP = 3  # untimed calls of each first: the first calls trace the graph


@dataclass
class Row:
    """One way of running the model: seconds per request, seconds in all, detections per request."""

    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    found: list[int] = field(default_factory=list)

    def add(self, latencies: list[float], seconds: float, found: list[int]) -> None:
        self.latencies += latencies
        self.seconds += seconds
        self.found += found


def test_images(cfg, model: Path, image_dir: Path | None, count: int) -> list[bytes]:
    """The first ``count`` files of ``image_dir``, or of the test split of the project whose
    ``paths.export`` the model is: the images it was scored on, as the pipeline stores them."""
    if image_dir is not None:
        paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in SUFFIXES)
    else:
        export, model = Path(cfg.paths.export), model.resolve()
        project = model.parents[len(export.parts) - 1]
        table = project / cfg.paths.convert / "test.csv"
        if model.parts[-len(export.parts) :] != export.parts or not table.is_file():
            raise SystemExit(f"{model}: not the export of a project with a test split; pass --image-dir")
        with table.open(newline="") as rows:
            names = dict.fromkeys(row["filename"] for row in csv.DictReader(rows))  # in order, once each
        paths = [project / cfg.paths.clean_images / name for name in names]
    if not paths:
        raise SystemExit("no images to send")
    return [p.read_bytes() for p in paths[:count]]


def post(connection: http.client.HTTPConnection, body: bytes) -> int:
    """One request to /invocations: the number of detections in the answer. Anything but a 200
    with a list of predictions fails the run."""
    connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = response.read()
    if response.status != 200:
        raise RuntimeError(f"the server answered {response.status}: {answer[:2000]!r}")
    predictions = json.loads(answer)["predictions"]
    if not isinstance(predictions, list):
        raise RuntimeError(f"no list of predictions in the answer: {answer[:2000]!r}")
    return len(predictions)


def connect(port: int) -> http.client.HTTPConnection:
    """http.client, one keep-alive connection per client, as a client sending many requests
    does: urllib would open a TCP connection for each request and time that as well."""
    return http.client.HTTPConnection("127.0.0.1", port, timeout=300)


def served(port: int, bodies: Sequence[bytes], clients: int, row: Row) -> None:
    """Every body POSTed, ``clients`` threads at a time, each sending its share in turn."""
    latencies, found = [0.0] * len(bodies), [0] * len(bodies)
    failures: list[BaseException] = []

    def client(share: range) -> None:
        connection = connect(port)
        try:
            for i in share:
                begun = time.perf_counter()
                found[i] = post(connection, bodies[i])
                latencies[i] = time.perf_counter() - begun
        except BaseException as error:  # re-raised in the main thread
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(range(c, len(bodies), clients),)) for c in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    row.add(latencies, time.perf_counter() - start, found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="exported model (default: paths.export)")
    parser.add_argument("--image-dir", type=Path, default=None, help="images to send (default: the test split)")
    parser.add_argument("--images", type=int, default=50, help="how many images")
    parser.add_argument("--repeats", type=int, default=3, help="times each image is sent, per row")
    args, overrides = parser.parse_known_args()
    cfg = compose_config(ROOT, overrides)
    model = exported_model(cfg, args.model)
    images = test_images(cfg, model, args.image_dir, args.images)
    texts = [base64.b64encode(raw).decode() for raw in images]
    bodies = [json.dumps({"dataframe_records": [{IMAGE: text}]}).encode() for text in texts]
    requests = len(images) * args.repeats
    print(f"{len(images)} images x {args.repeats} passes = {requests} requests a row, {os.cpu_count()} CPU(s)")

    with tempfile.TemporaryDirectory(prefix="odpipe-serve-") as tmp:
        work = Path(tmp)
        print("registering the export in a temporary MLflow store ...", flush=True)
        uri = f"sqlite:///{work / 'mlflow.db'}"
        client = open_client(uri)
        run_id = create_run(client, "serving-speed", work, {})
        version = register_version(client, NAME, log_model(client, run_id, model), run_id, {}, "benchmark")
        print("loading the SavedModel and the pyfunc model in-process ...", flush=True)
        detector = load_detector(model)
        with global_tracking_uri(uri):
            pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}/{version}")
        print("starting mlflow models serve ...", flush=True)
        with scoring_server(f"models:/{NAME}/{version}", uri, work) as url:
            port = urllib.parse.urlsplit(url).port
            connection = connect(port)
            # One image at a time through each in turn, so that the machine's noise hits all alike.
            one_by_one: dict[str, Callable[[int], int]] = {
                "SavedModel in-process (detect)": lambda i: len(
                    detect(detector, readable_bytes(images[i]), DEFAULT_MIN_SCORE)
                ),
                "pyfunc in-process": lambda i: len(pyfunc.predict(pd.DataFrame({IMAGE: [texts[i]]}))),
                "served, 1 client": lambda i: post(connection, bodies[i]),
            }
            for call in one_by_one.values():  # warm-up: the first calls trace the graph
                for i in range(min(WARM_UP, len(images))):
                    call(i)
            rows = {name: Row() for name in [*one_by_one, "served, 4 clients"]}
            for turn in range(args.repeats):
                print(f"pass {turn + 1}/{args.repeats}: in-process and 1 client, then 4 clients ...", flush=True)
                connection.close()  # a new one each pass: the server drops one idle for 5 s
                for i in range(len(images)):
                    for name, call in one_by_one.items():
                        begun = time.perf_counter()
                        found = call(i)
                        took = time.perf_counter() - begun
                        rows[name].add([took], took, [found])
                served(port, bodies, 4, rows["served, 4 clients"])
            connection.close()

    expected = rows["SavedModel in-process (detect)"].found
    for name, row in rows.items():  # same model, same pixels: the same detections
        if row.found != expected:
            raise SystemExit(f"{name}: {sum(row.found)} detections, in-process {sum(expected)}")
    reference = float(np.percentile(rows["SavedModel in-process (detect)"].latencies, 50))
    print(f"\n  {'':32s} {'requests/s':>10s} {'p50 ms':>8s} {'p99 ms':>8s} {'p50 vs in-process':>18s}")
    for name, row in rows.items():
        p50, p99 = np.percentile(row.latencies, [50, 99])
        rate = len(row.latencies) / row.seconds  # 1 / mean latency one at a time; 4 clients: over wall time
        print(f"  {name:32s} {rate:10.1f} {1e3 * p50:8.1f} {1e3 * p99:8.1f} {p50 / reference:17.2f}x")
    ratio = float(np.percentile(rows["served, 1 client"].latencies, 50)) / reference
    print(f"served p50 at 1 client = {ratio:.2f}x in-process (goal <= 1.2x): {'MET' if ratio <= 1.2 else 'NOT MET'}")


if __name__ == "__main__":
    main()
