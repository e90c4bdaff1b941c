"""The registered model as MLflow loads and serves it: the detections of `odpipe predict`, and a
malformed request answered 4xx, naming the row, by the real scoring server."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from PIL import Image

from odpipe.core.images import readable_bytes
from odpipe.core.runtime import load_params
from odpipe.detect.detectors import load_detector
from odpipe.detect.evaluate import Detection, as_boxes, detect
from odpipe.detect.export import LABEL_MAP_NAME
from odpipe.detect.label_map import read_label_map
from odpipe.detect.predict import predict_images
from odpipe.detect.serve import DEFAULT_MIN_SCORE, detections_frame, log_model
from odpipe.devtools.servers import scoring_server
from odpipe.engine.mlflow_runs import SPLIT_TAG, TRACKING_URI_ENV, create_run, open_client, register_version
from odpipe.engine.pyfunc import input_paths, parse_images
from tests.helpers.models import logged_before_the_move

NAME = "odpipe-detector"
# The smoke experiment without mosaics or validation: a model to serve, not a good one.
BOX = ("xmin", "ymin", "xmax", "ymax")
LABELS = ("image", "path", "class_id", "class")  # compared exactly; the rest within tolerance
BOX_TOLERANCE, SCORE_TOLERANCE = 1e-3, 1e-5


def _png(mode: str = "RGB", size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 90).save(out, format="PNG")
    return out.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Input parsing: no model needed.


def test_rows_are_base64_text_or_bytes_read_as_predict_reads_files_and_paths_echoed() -> None:
    rgb, grey = _png(), _png("L")
    frame = pd.DataFrame({"image": [_b64(rgb), grey, _b64(grey)[:20] + "\n" + _b64(grey)[20:]], "path": ["a", None, 3]})
    assert parse_images(frame) == [rgb, readable_bytes(grey), readable_bytes(grey)]
    assert readable_bytes(grey) != grey  # converted to an RGB JPEG, as odpipe predict does
    assert input_paths(frame) == ["a", None, "3"]
    assert input_paths(frame[["image"]]) is None


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"image": [_b64(_png()), "%%% not base64 %%%"]}), "row 1: not base64 text"),
        (
            pd.DataFrame({"image": [_b64(b"hello")]}),
            "row 0: not an image Pillow can read (no image format it recognises)",
        ),
        (pd.DataFrame({"image": [_b64(_png()[:40])]}), "row 0: not an image Pillow can read"),  # truncated
        (pd.DataFrame({"image": [""]}), "row 0: not an image Pillow can read (zero-byte file)"),
        (
            pd.DataFrame({"image": pd.Series([None, 7], dtype=object)}),
            "row 0: expected base64 text or bytes, got NoneType; row 1: expected base64 text or bytes, got int",
        ),
        (pd.DataFrame({"picture": [_b64(_png())]}), "no 'image' column (got ['picture'])"),
        (pd.DataFrame({"image": []}), "no rows: send one row per image"),
        (pd.DataFrame({"image": ["!"] * 13}), "row 9: not base64 text (Only base64 data is allowed); and 3 more"),
        ([_b64(_png())], "expected a DataFrame with an 'image' column, got list"),
    ],
)
def test_a_malformed_request_is_the_clients_error_naming_the_row(frame: object, message: str) -> None:
    with pytest.raises(MlflowException) as caught:
        parse_images(frame)
    assert message in caught.value.message
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE" and caught.value.get_http_status_code() == 400


def test_detections_are_one_row_each_with_fixed_columns_even_when_there_are_none() -> None:
    first = [Detection(2, 0.9, 1.5, 2.0, 30.25, 40.0), Detection(7, 0.25, 0.0, 0.0, 1.0, 1.0)]
    found = [first, [], [Detection(1, 1.0, 0, 0, 5, 5)]]
    frame = detections_frame(found, {1: "circle", 2: "square"}, ["a.jpg", None, "c.jpg"])
    assert list(frame.columns) == ["image", "path", "class_id", "class", "score", *BOX]
    assert frame[["image", "path", "class_id", "class"]].values.tolist() == [
        [0, "a.jpg", 2, "square"],
        [0, "a.jpg", 7, "7"],  # an id missing from the label map keeps its number, as in odpipe predict
        [2, "c.jpg", 1, "circle"],
    ]
    assert frame.loc[0, list(BOX)].tolist() == [1.5, 2.0, 30.25, 40.0] and frame["score"].tolist() == [0.9, 0.25, 1.0]
    empty = detections_frame([[], []], {1: "circle"}, None)
    assert list(empty.columns) == ["image", "class_id", "class", "score", *BOX] and empty.empty
    assert str(empty["image"].dtype) == "int64" and str(empty["score"].dtype) == "float64"


# The real model: trained for a few steps, registered, loaded and served.


@dataclass(frozen=True)
class Registered:
    uri: str  # the sqlite store holding the registry
    version: str
    unregistered_run: str  # a run whose model was logged and not registered, as below a quality gate
    images: list[tuple[str, bytes]]  # (name, file bytes)
    expected: list[dict]  # what odpipe predict computes for them at min_score 0, unrounded
    predicted: list[dict]  # odpipe predict's own rows (rounded for its files) at min_score 0


def _reference(export: Path, images: list[tuple[str, bytes]], min_score: float) -> list[dict]:
    """odpipe predict's detections, read and run as it does, before it rounds them for its files."""
    detector, categories = load_detector(export), read_label_map(export / LABEL_MAP_NAME)
    rows = []
    for index, (name, raw) in enumerate(images):
        found = detect(detector, readable_bytes(raw), min_score)
        for box, d in zip(as_boxes(found, categories), found, strict=True):
            labels = dict(zip(LABELS, (index, name, d.class_id, box.label), strict=True))
            rows.append(
                labels | {"score": d.score} | dict(zip(BOX, (box.xmin, box.ymin, box.xmax, box.ymax), strict=True))
            )
    return rows


@pytest.fixture(scope="module")
def registered(tmp_path_factory, smoke_project: Path) -> Iterator[Registered]:
    """The session's smoke model (its export as the tests before left it: only read here),
    registered in a sqlite store of its own; the test images, a greyscale PNG among them
    (converted on reading), and odpipe predict's detections of them."""
    mp = pytest.MonkeyPatch()
    mp.delenv(TRACKING_URI_ENV, raising=False)
    base = tmp_path_factory.mktemp("serving")
    work = smoke_project
    paths = load_params(work).paths
    export = work / paths.export
    jpegs = sorted((work / paths.clean_images).glob("*.jpg"))[:3]
    grey = io.BytesIO()
    Image.open(jpegs[0]).convert("L").save(grey, format="PNG")  # converted on reading, as predict does
    images = [(p.name, p.read_bytes()) for p in jpegs] + [("grey.png", grey.getvalue())]
    folder = base / "images"
    folder.mkdir()
    for name, data in images:
        (folder / name).write_bytes(data)
    predicted, errors = predict_images(export, [folder / n for n, _ in images], base / "predicted", 0.0, 1000)
    assert not errors

    uri = f"sqlite:///{base / 'registry' / 'mlflow.db'}"
    client = open_client(uri)
    run_id = create_run(client, "odpipe-serving", base / "registry", {})
    version = register_version(client, NAME, log_model(client, run_id, export), run_id, {"map": 0.25}, "split-digest")
    unregistered = create_run(client, "odpipe-serving", base / "registry", {})
    log_model(client, unregistered, export)
    assert TRACKING_URI_ENV not in os.environ  # logging through MLflow's global state left none behind
    yield Registered(uri, version, unregistered, images, _reference(export, images, 0.0), predicted)
    mp.undo()


def test_the_version_is_a_logged_model_of_the_run_with_its_metrics(registered: Registered) -> None:
    client = MlflowClient(registered.uri)
    version = client.get_model_version(NAME, registered.version)
    assert version.tags["map"] == "0.2500" and version.tags[SPLIT_TAG] == "split-digest"
    (logged,) = client.get_run(version.run_id).outputs.model_outputs  # shown on the run's page
    assert version.source == f"models:/{logged.model_id}"
    files = {f.path for f in client.list_logged_model_artifacts(logged.model_id)}
    assert {"MLmodel", "artifacts", "input_example.json", "python_model.pkl"} <= files


def _assert_same(
    got: list[dict], want: list[dict], box: float = BOX_TOLERANCE, score: float = SCORE_TOLERANCE, labels=LABELS
) -> None:
    """The same detections in the same order: labels exactly, numbers within tolerance."""
    assert len(got) == len(want) > 0
    for g, w in zip(got, want, strict=True):
        assert [g.get(k) for k in labels] == [w[k] for k in labels]
        assert g["score"] == pytest.approx(w["score"], abs=score)
        assert [g[k] for k in BOX] == pytest.approx([w[k] for k in BOX], abs=box)


def test_the_reference_is_what_odpipe_predict_writes_before_it_rounds(registered: Registered) -> None:
    """The reference the model is held to (1e-3 px, 1e-5) is odpipe predict's own output, which
    its files round to 0.1 px and 4 decimals."""
    names = [name for name, _ in registered.images]
    rows = [
        r | {"path": Path(r["file"]).name, "image": names.index(Path(r["file"]).name)} for r in registered.predicted
    ]
    _assert_same(rows, registered.expected, box=0.05 + 1e-6, score=5e-5 + 1e-9, labels=("image", "path", "class"))


LOAD = textwrap.dedent(
    """
    import base64, json, sys
    import mlflow, pandas as pd
    model = mlflow.pyfunc.load_model(sys.argv[1])
    frame = pd.read_json(sys.argv[2], orient="records", dtype=False)
    out = {
        "class": type(model.unwrap_python_model()).__module__,
        "all": model.predict(frame, params={"min_score": 0.0}).to_dict(orient="records"),
        "default": model.predict(frame).to_dict(orient="records"),
        "bytes": model.predict(frame.assign(image=frame["image"].map(base64.b64decode)), params={"min_score": 0.0})
        .to_dict(orient="records"),
    }
    json.dump(out, open(sys.argv[3], "w"))
    """
)


def _load_in_a_fresh_process(model: str, registered: Registered, tmp_path: Path) -> dict:
    """``LOAD`` run on ``model`` (a models:/ URI or a folder) in a new interpreter, from elsewhere
    than the repo, on the test images: what it printed."""
    request = tmp_path / "request.json"
    request.write_text(json.dumps([{"image": _b64(data), "path": name} for name, data in registered.images]))
    proc = subprocess.run(
        [sys.executable, "-c", LOAD, model, str(request), str(tmp_path / "out.json")],
        cwd=tmp_path,
        env={**os.environ, TRACKING_URI_ENV: registered.uri},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / "out.json").read_text())


def test_the_registered_version_loads_in_a_fresh_process_and_detects_as_predict(
    registered: Registered, tmp_path: Path
) -> None:
    """`models:/odpipe-detector/1` in a new interpreter with only the project installed: the pickled
    model refers to odpipe.detect.serve, which loads its model."""
    out = _load_in_a_fresh_process(f"models:/{NAME}/{registered.version}", registered, tmp_path)
    assert out["class"] == "odpipe.detect.serve"
    _assert_same(out["all"], registered.expected)
    _assert_same(out["bytes"], registered.expected)
    confident = [r for r in registered.expected if r["score"] >= DEFAULT_MIN_SCORE]
    assert len(out["default"]) == len(confident) and all(r["score"] >= DEFAULT_MIN_SCORE for r in out["default"])


def test_a_model_registered_before_the_move_loads_and_detects_as_predict(
    registered: Registered, tmp_path: Path
) -> None:
    """A version logged before odpipe's modules moved names its class ``odpipe.serving.DetectorModel``
    (cloudpickle stores the path): odpipe.moved keeps that path importing, as the new module itself."""
    model = logged_before_the_move(registered.uri, NAME, registered.version, "detector", tmp_path / "old")
    out = _load_in_a_fresh_process(str(model), registered, tmp_path)
    assert out["class"] == "odpipe.detect.serve"
    _assert_same(out["all"], registered.expected)


def _post(url: str, body: object) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def server(registered: Registered, tmp_path: Path) -> Iterator[str]:
    """`mlflow models serve -m runs:/<run id>/model` of a run whose model nobody registered: every
    evaluated run's model can be served (the registered version's is the same model, loaded in a
    fresh process above); always stopped."""
    with scoring_server(f"runs:/{registered.unregistered_run}/model", registered.uri, tmp_path) as url:
        yield url


def test_the_scoring_server_answers_as_predict_and_refuses_bad_rows_with_a_400(
    registered: Registered, server: str
) -> None:
    invocations = f"{server}/invocations"
    split = {"columns": ["image", "path"], "data": [[_b64(data), name] for name, data in registered.images]}
    status, body = _post(invocations, {"dataframe_split": split, "params": {"min_score": 0.0}})
    assert status == 200, body
    _assert_same(body["predictions"], registered.expected)
    records = [{"image": _b64(data)} for _, data in registered.images]
    status, body = _post(invocations, {"dataframe_records": records, "params": {"min_score": 0.0}})
    assert status == 200 and all("path" not in r for r in body["predictions"])
    _assert_same([r | {"path": registered.images[r["image"]][0]} for r in body["predictions"]], registered.expected)

    good = _b64(registered.images[0][1])
    bad = [
        ({"dataframe_split": {"columns": ["image"], "data": [[good], [_b64(b"hello")]]}}, "row 1: not an image"),
        ({"dataframe_records": [{"image": "%%% not base64"}]}, "row 0: not base64 text"),
        ({"dataframe_records": [{"image": good}, {"image": _b64(_png()[:-20])}]}, "row 1: TensorFlow cannot decode"),
        ({"dataframe_split": {"columns": ["image"], "data": []}}, "no rows"),
        ({"dataframe_split": {"columns": ["picture"], "data": [[good]]}}, "missing inputs ['image']"),  # by signature
        ({"images": [good]}, "dataframe_split"),  # not a field the protocol knows: it lists them
        (b"{not json", "JSON"),
    ]
    for payload, message in bad:
        status, body = _post(invocations, payload)
        assert 400 <= status < 500, (payload, status, body)
        assert message in body["message"], body["message"][-2000:]
    status, body = _post(invocations, {"dataframe_records": [{"image": good}], "params": {"min_score": 0.0}})
    assert status == 200 and len(body["predictions"]) == sum(r["image"] == 0 for r in registered.expected)
