"""Reading and writing video with OpenCV, the way long videos and live streams need it.

- **Sources.** A video file, a folder of frames (sorted by name), or anything
  ``cv2.VideoCapture`` opens (an ``rtsp://`` or ``http://`` stream, a camera by its index). Frames are
  decoded on a thread of their own, a few ahead of the consumer (OpenCV releases the GIL while
  decoding, so it runs beside the model).
- **Headers lie.** A container's frame count and FPS can be wrong or missing: frames are
  counted by reading them, and each frame's time comes from the decoder
  (``CAP_PROP_POS_MSEC``); the header's count is used only as an estimate for progress.
- **No silent rotation.** OpenCV would apply a phone video's rotation flag to some frames'
  decoding depending on the backend; it is switched off so that frames, boxes and ground truth
  share one orientation.
- **Streams.** A stream that stops sending is reported after ``read_timeout`` seconds
  (``StreamStalled``), never a hang; one that ends is the end of the video.
- **Writing.** OpenCV's pip wheels carry no H.264 encoder (``avc1`` fails to open): ``mp4v``
  is the default, and a writer that does not open is an error naming the codecs that work.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# FFmpeg's own messages about a damaged file repeat, line after line, what VideoError says once.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
import cv2  # noqa: E402  (reads the variables above when it loads)
import numpy as np  # noqa: E402

from odpipe.core.images import IMAGE_SUFFIXES

WORKING_CODECS = {"mp4v": ".mp4", "MJPG": ".avi", "FFV1": ".mkv"}  # in OpenCV's pip wheels
DEFAULT_FPS = 25.0  # of a folder of frames, or a video whose header has no rate
_QUEUE_FRAMES = 16  # decoded frames held ahead of the consumer
_END = object()
_NO_ROTATION = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # frames as stored, like a video's


class VideoError(RuntimeError):
    """A video that cannot be read or written; the message names it and says why."""


class StreamStalled(VideoError):
    """A stream sent no frame for longer than the read timeout."""


@dataclass(frozen=True)
class Frame:
    index: int  # 1-based, as MOTChallenge numbers frames
    time: float  # seconds from the start
    image: np.ndarray  # height x width x 3, BGR (OpenCV's order)


def is_stream(source: str) -> bool:
    return "://" in source


def _frame_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise VideoError(f"{folder}: no images in the folder (frames are read from {sorted(IMAGE_SUFFIXES)} files)")
    return files


# OpenCV's own read limit, in read timeouts: longer than the consumer's wait (see _capture).
_DECODER_WAIT = 2


def _capture(source: str, timeout: float) -> cv2.VideoCapture:
    """An opened capture of a file, a stream or a camera (its index: ``0``); OpenCV's silent
    failure made an error. Opening gives up after ``timeout`` seconds and each read after twice
    that, where the backend supports it (FFmpeg does), so that a dead stream cannot block a thread
    for ever. A read that times out looks like the stream's end to OpenCV; with the longer limit
    the consumer, waiting ``timeout`` for a frame, always reports the stall first."""
    device = source.isdigit()
    if not device and not is_stream(source) and not Path(source).exists():
        raise VideoError(f"{source}: no such file")
    timeout_ms = int(timeout * 1000)
    limits = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, _DECODER_WAIT * timeout_ms]
    capture = cv2.VideoCapture(int(source) if device else source, cv2.CAP_ANY, limits)
    if not capture.isOpened():
        kind = "stream" if is_stream(source) else "camera" if device else "file"
        raise VideoError(
            f"{source}: OpenCV cannot open this {kind} (not a video, unreachable, or encoded with a codec "
            "this OpenCV build cannot decode)"
        )
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
    return capture


class VideoSource:
    """Frames of a video file, a stream or a folder of images, decoded on a background thread.

    Iterate it (once) for ``Frame`` objects; ``width``, ``height`` and ``fps`` are known as soon
    as it opens. ``fps`` comes from the header, or ``default_fps`` where the header has none
    (a folder of frames always uses ``default_fps``). Use it as a context manager, or call
    ``close``: the reading thread is stopped before the capture is released under it."""

    def __init__(self, source: str | Path, default_fps: float = DEFAULT_FPS, read_timeout: float = 10.0) -> None:
        self.name = str(source)
        self.read_timeout = read_timeout
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._folder = _frame_files(Path(source)) if Path(source).is_dir() else None
        if self._folder is not None:
            first = cv2.imread(str(self._folder[0]), _NO_ROTATION)
            if first is None:
                raise VideoError(f"{self._folder[0]}: cannot read the image")
            self.height, self.width = first.shape[:2]
            self.fps = default_fps
            self.estimated_frames = len(self._folder)
            self._capture = None
        else:  # the opened capture is released by close()
            self._capture = _capture(self.name, read_timeout)
            self.width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
            self.height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            fps = self._capture.get(cv2.CAP_PROP_FPS)
            self.fps = fps if 0 < fps < 1000 else default_fps
            count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
            self.estimated_frames = count if count > 0 else None

    def _decoded(self) -> Iterator[tuple[float | None, np.ndarray]]:
        """(decoder time in seconds or None, image) in order, on the reading thread."""
        if self._folder is not None:
            for path in self._folder:
                image = cv2.imread(str(path), _NO_ROTATION)
                if image is None:
                    raise VideoError(f"{path}: cannot read the image")
                if image.shape[:2] != (self.height, self.width):
                    raise VideoError(
                        f"{path}: {image.shape[1]}x{image.shape[0]}, the first frame is "
                        f"{self.width}x{self.height}; a video's frames share one size"
                    )
                yield None, image
            return
        while True:
            ok, image = self._capture.read()
            if not ok:
                return
            yield self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0, image

    def _hand_over(self, frames: queue.Queue, item: object) -> bool:
        """Put ``item`` in the queue, waiting for room until the source is closed; False then."""
        while not self._stop.is_set():
            try:
                frames.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read_into(self, frames: queue.Queue) -> None:
        try:
            for item in self._decoded():
                if not self._hand_over(frames, item):
                    return
            self._hand_over(frames, _END)
        except Exception as err:  # handed to the consumer, which raises it in its own thread
            self._hand_over(frames, err)

    def __iter__(self) -> Iterator[Frame]:
        frames: queue.Queue = queue.Queue(maxsize=_QUEUE_FRAMES)
        # A daemon thread: a stream stuck inside OpenCV's read cannot keep the process alive.
        self._reader = threading.Thread(target=self._read_into, args=(frames,), daemon=True, name="video-reader")
        self._reader.start()
        index, last_time = 0, None
        while True:
            try:
                item = frames.get(timeout=self.read_timeout)
            except queue.Empty:
                raise StreamStalled(
                    f"{self.name}: no frame for {self.read_timeout:g} s after frame {index}; the stream stalled"
                ) from None
            if item is _END:
                break
            if isinstance(item, Exception):
                raise item
            decoder_time, image = item
            index += 1
            last_time = frame_time(decoder_time, last_time, index, self.fps)
            yield Frame(index, last_time, image)
        if index == 0:
            raise VideoError(f"{self.name}: no frames could be decoded (empty, truncated, or an unsupported codec)")

    def close(self) -> None:
        """Stop the reading thread, then release the capture; a capture is left to the process's
        end only when its thread is still stuck in a read (releasing it under the read could
        crash the decoder)."""
        self._stop.set()
        if self._reader is not None:
            self._reader.join(timeout=_DECODER_WAIT * self.read_timeout + 1)
        if self._capture is not None and (self._reader is None or not self._reader.is_alive()):
            self._capture.release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def frame_time(decoder_time: float | None, previous: float | None, index: int, fps: float) -> float:
    """A frame's time: the decoder's when it has one that moves forward; otherwise the
    previous frame's plus one frame period (some backends report 0 for every frame, and a
    folder of images has no clock)."""
    if decoder_time is not None and (previous is None or decoder_time > previous):
        return decoder_time
    return (index - 1) / fps if previous is None else previous + 1.0 / fps


def open_writer(path: Path, fps: float, width: int, height: int, codec: str = "mp4v") -> cv2.VideoWriter:
    """A video writer that is known to work; an encoder this OpenCV lacks is an error that says
    which do work, rather than a silently empty file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(codec) != 4:
        raise VideoError(f"{path}: codec {codec!r} is not a four-character code; use one of {_codec_list()}")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (width, height), True)
    if not writer.isOpened():
        raise VideoError(
            f"{path}: OpenCV could not open a {codec!r} video writer. OpenCV's pip wheels have no H.264 "
            f"encoder (avc1, h264); codecs that work: {_codec_list()}"
        )
    return writer


def video_name(stem: str, codec: str) -> str:
    """A file name whose container suits ``codec`` (FFV1 cannot go in an .mp4, for one)."""
    return stem + WORKING_CODECS.get(codec, ".mp4")


def _codec_list() -> str:
    return ", ".join(f"{codec} ({suffix})" for codec, suffix in WORKING_CODECS.items())
