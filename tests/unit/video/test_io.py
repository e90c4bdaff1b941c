"""Video I/O: frames counted by reading, clear errors for what OpenCV cannot open or write, and
streams that end or stall reported rather than hanging."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from odpipe.video.io import StreamStalled, VideoError, VideoSource, frame_time, open_writer, video_name


def _write(path: Path, frames: int, codec: str = "mp4v", fps: float = 10.0) -> list[np.ndarray]:
    images = [np.full((48, 64, 3), 8 * i, np.uint8) for i in range(frames)]
    writer = open_writer(path, fps, 64, 48, codec)
    for image in images:
        writer.write(image)
    writer.release()
    return images


@pytest.mark.parametrize("codec", ["mp4v", "MJPG"])
def test_frames_are_counted_by_reading_and_timed_by_the_decoder(tmp_path: Path, codec: str) -> None:
    path = tmp_path / video_name("clip", codec)
    written = _write(path, 30, codec)
    source = VideoSource(path)
    frames = list(source)
    assert [f.index for f in frames] == list(range(1, 31))
    assert source.fps == pytest.approx(10.0) and (source.width, source.height) == (64, 48)
    np.testing.assert_allclose([f.time for f in frames], np.arange(30) / 10.0, atol=1e-6)
    assert all(abs(int(f.image.mean()) - int(w.mean())) <= 5 for f, w in zip(frames, written, strict=True))


def test_a_folder_of_frames_is_a_video_in_name_order(tmp_path: Path) -> None:
    for i in (3, 1, 2):
        cv2.imwrite(str(tmp_path / f"f{i:03d}.png"), np.full((20, 30, 3), 40 * i, np.uint8))
    (tmp_path / "notes.txt").write_text("not a frame")
    frames = list(VideoSource(tmp_path, default_fps=4.0))
    assert [int(f.image[0, 0, 0]) for f in frames] == [40, 80, 120]
    assert [f.time for f in frames] == [0.0, 0.25, 0.5]


def test_a_frame_of_another_size_in_a_folder_is_named(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((20, 30, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((21, 30, 3), np.uint8))
    with pytest.raises(VideoError, match=r"b\.png: 30x21, the first frame is 30x20"):
        list(VideoSource(tmp_path))


def test_decoder_times_that_stall_fall_back_to_the_frame_period() -> None:
    assert frame_time(None, None, 1, 25.0) == 0.0
    assert frame_time(0.0, 0.0, 2, 25.0) == pytest.approx(0.04)  # a backend that says 0 for every frame
    assert frame_time(0.5, 0.04, 3, 25.0) == 0.5


def test_unreadable_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 50)
    with pytest.raises(VideoError, match=r"junk\.mp4: OpenCV cannot open this file"):
        VideoSource(junk)
    with pytest.raises(VideoError, match=r"missing\.mp4: no such file"):
        VideoSource(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match=r"empty: no images in the folder"):
        VideoSource(tmp_path / "empty")


def test_a_video_without_frames_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "zero.avi"
    _write(path, 0, "MJPG")
    with pytest.raises(VideoError, match=r"zero\.avi: no frames could be decoded"):
        list(VideoSource(path))


@pytest.mark.parametrize("codec", ["avc1", "h264", "xyz"])
def test_an_encoder_opencv_lacks_names_the_codecs_that_work(tmp_path: Path, codec: str) -> None:
    with pytest.raises(VideoError, match=r"codecs that work: mp4v \(\.mp4\), MJPG \(\.avi\), FFV1 \(\.mkv\)|four-char"):
        open_writer(tmp_path / "out.mp4", 10, 64, 48, codec)
    assert not (tmp_path / "out.mp4").exists() or (tmp_path / "out.mp4").stat().st_size == 0


def _mjpeg_server(frames: int, stall: bool) -> Iterator[str]:
    """An IP camera's multipart MJPEG stream on 127.0.0.1 that sends ``frames`` frames, then
    closes the connection or, with ``stall``, keeps it open and sends nothing more."""
    jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 120, np.uint8))[1].tobytes()
    release = threading.Event()

    class Camera(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
            for _ in range(frames):
                self.wfile.write(part + jpeg + b"\r\n")
            self.wfile.flush()
            if stall:
                release.wait(30)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/stream.mjpg"
    finally:
        release.set()
        server.shutdown()


def test_a_stream_that_ends_yields_what_it_sent() -> None:
    for url in _mjpeg_server(12, stall=False):
        assert len(list(VideoSource(url, read_timeout=5))) == 12


def test_a_stream_that_stalls_is_reported_after_the_read_timeout() -> None:
    for url in _mjpeg_server(12, stall=True):
        source = VideoSource(url, read_timeout=1.5)
        seen, started = 0, time.monotonic()
        with pytest.raises(StreamStalled, match=r"no frame for 1.5 s after frame 12; the stream stalled"):
            for _ in source:
                seen += 1
        assert seen == 12 and time.monotonic() - started < 10
