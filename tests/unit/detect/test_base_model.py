"""The base_model stage's fetching: zoo tarballs over HTTP, local tarballs and folders, bare configs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from odpipe.core.manifest import sha256_file
from odpipe.data.download import ArchiveTooLargeError, is_url
from odpipe.detect.base_model import checkpoint_prefix, fetch_base_model
from tests.conftest import ROOT, RangeHandler, serve, zoo_tarball

BUILT_IN = ROOT / "conf" / "model" / "base" / "ssd_mobilenet_v2_small.config"
NAME = "tiny_ssd_coco17_tpu-8"


@pytest.fixture
def zoo_model(tmp_path: Path) -> Path:
    """A zoo-style tarball (the checkpoint files' contents do not matter to fetching)."""
    src = tmp_path / "src"
    (src / "saved_model").mkdir(parents=True)
    (src / "saved_model" / "saved_model.pb").write_bytes(b"graph")
    for suffix in (".index", ".data-00000-of-00001"):
        (src / f"ckpt-7{suffix}").write_bytes(b"weights" + suffix.encode())
    return zoo_tarball(tmp_path / f"{NAME}.tar.gz", NAME, BUILT_IN, src / "ckpt-7", src / "saved_model")


def _fetch(source: str, tmp_path: Path, sha256: str | None = None, **options) -> tuple[Path, dict]:
    out = tmp_path / "models" / "base_model"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out, fetch_base_model(source, out, tmp_path / "cache", sha256, **options)


def test_a_zoo_tarball_is_downloaded_once_unpacked_and_recorded(zoo_model: Path, tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(zoo_model, served)
    digest = sha256_file(zoo_model)
    with serve(served) as url:
        out, record = _fetch(f"{url}/{zoo_model.name}", tmp_path, digest)
        _fetch(f"{url}/{zoo_model.name}", tmp_path, digest)  # from the cache this time
    assert RangeHandler.requests == ["full"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "checkpoint/checkpoint",
        "checkpoint/ckpt-0.data-00000-of-00001",
        "checkpoint/ckpt-0.index",
        "pipeline.config",
    ]
    assert (out / "pipeline.config").read_bytes() == BUILT_IN.read_bytes()
    assert record["source"] == {"source": f"{url}/{zoo_model.name}", "sha256": digest}
    assert checkpoint_prefix(out) == out / "checkpoint" / "ckpt-0"


def test_a_wrong_checksum_fails_before_anything_is_unpacked(zoo_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"{zoo_model.name}: sha256 is"):
        _fetch(str(zoo_model), tmp_path, "0" * 64)
    assert not any((tmp_path / "models" / "base_model").iterdir())


def test_a_local_folder_or_bare_config_works_offline(zoo_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "unpacked"
    shutil.unpack_archive(zoo_model, folder)
    (folder / NAME / "checkpoint" / "ckpt-12.index").write_bytes(b"later")
    out, record = _fetch(str(folder), tmp_path)
    assert checkpoint_prefix(out) == out / "checkpoint" / "ckpt-12"  # the latest one
    assert record["source"]["sha256"] is None and record["num_files"] == 5

    out, record = _fetch(str(BUILT_IN), tmp_path)
    assert [p.name for p in out.iterdir()] == ["pipeline.config"]
    assert record["source"]["sha256"] == sha256_file(BUILT_IN)
    assert checkpoint_prefix(out) == out / "checkpoint" / "ckpt-0"  # absent: the stage that needs it says so


def test_a_source_without_a_pipeline_config_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(ValueError, match="empty_model: expected one pipeline.config, found no"):
        _fetch(str(tmp_path / "empty_model"), tmp_path)
    with pytest.raises(FileNotFoundError, match="model.source .*missing.tar.gz is not a file"):
        _fetch(str(tmp_path / "missing.tar.gz"), tmp_path)


def test_a_tarball_over_the_extraction_cap_is_refused(zoo_model: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ArchiveTooLargeError, match=rf"{zoo_model.name}: would unpack .*odpipe\.detect\.base_model\.MAX_EXTRACT_GB"
    ):
        _fetch(str(zoo_model), tmp_path, max_extract_gb=1e-9)
    assert not any((tmp_path / "models" / "base_model").iterdir())


def test_every_zoo_model_is_fetched_over_https() -> None:
    configs = {path.name: yaml.safe_load(path.read_text()) for path in (ROOT / "conf" / "model").glob("*.yaml")}
    # Segmentation and classification models (they name their task) are Keras layers: nothing to fetch.
    sources = {name: config["source"] for name, config in configs.items() if "task" not in config}
    urls = {name: source for name, source in sources.items() if is_url(source)}
    assert urls, "the zoo models are configured by URL"
    assert {name: url for name, url in urls.items() if not url.startswith("https://")} == {}
