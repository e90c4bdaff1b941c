"""An S3-compatible server on 127.0.0.1 for the tests: moto's server mode, in a process of its
own (as a team's MinIO or Ceph would be), stopped whatever happens; and an environment in which
neither boto3 nor the ``dvc`` it runs can find this machine's AWS settings, so that a remote's
credentials come only from where a test puts them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from odpipe.devtools.servers import free_port, wait_for_http

PROXIES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def isolate_aws(mp: pytest.MonkeyPatch, folder: Path) -> None:
    """Through ``mp``: no ``AWS_*`` variable of the machine's (keys, profile, region, CA bundle),
    an AWS config and a credentials file that are empty (written in ``folder``: botocore refuses a
    path that is not a file, /dev/null included), no instance metadata to ask, and no proxy
    between a client and 127.0.0.1. What the test process sets here, the ``dvc`` it starts
    inherits."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower() in PROXIES:
            mp.delenv(name)
    for variable, name in (("AWS_CONFIG_FILE", "aws-config"), ("AWS_SHARED_CREDENTIALS_FILE", "aws-credentials")):
        (folder / name).write_text("")
        mp.setenv(variable, str(folder / name))
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
    mp.setenv("NO_PROXY", "127.0.0.1,localhost")


@contextmanager
def moto_server(log: Path, seconds: float = 60) -> Iterator[str]:
    """``python -m moto.server`` of this environment on a free port of 127.0.0.1, in a process
    group of its own; yields its endpoint URL once it answers. Its output goes to ``log``. It
    accepts any credentials (a client must still send some: botocore refuses to sign without)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_http(f"{url}/moto-api/", proc, seconds, log)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _client(endpoint: str, key_id: str, secret: str):
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret, region_name="us-east-1"
    )


def create_bucket(endpoint: str, bucket: str, key_id: str, secret: str) -> None:
    """A new bucket on the server at ``endpoint``, made with boto3 as any S3 client would."""
    _client(endpoint, key_id, secret).create_bucket(Bucket=bucket)


def bucket_keys(endpoint: str, bucket: str, key_id: str, secret: str) -> list[str]:
    """Every object key in ``bucket``."""
    pages = _client(endpoint, key_id, secret).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]
