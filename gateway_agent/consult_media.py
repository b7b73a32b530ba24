"""Media sources of the consult agent: the camera through aiortc's ``MediaPlayer``, or a synthetic test pattern.

The test pattern is 640x480 yuv420p (what the VP8 encoder wants, so no colour conversion per frame): SMPTE-like bars, a
moving bar and a wall clock ``HH:MM:SS.mmm`` drawn with a 5x7 bitmap font, so a viewer sees motion and latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Final

import av
import numpy as np
from aiortc import MediaStreamTrack, VideoStreamTrack
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError

log = logging.getLogger(__name__)

Plane = np.ndarray[Any, np.dtype[np.uint8]]
WIDTH: Final = 640
HEIGHT: Final = 480

# 5x7 glyphs, one string of 5 bits per row.
_FONT: Final[dict[str, tuple[str, ...]]] = {
    "0": ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    "1": ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    "2": ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    "3": ("11111", "00010", "00100", "00010", "00001", "10001", "01110"),
    "4": ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    "5": ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    "6": ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    "7": ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    "8": ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    "9": ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
    ":": ("00000", "01100", "01100", "00000", "01100", "01100", "00000"),
    ".": ("00000", "00000", "00000", "00000", "00000", "01100", "01100"),
}
_SCALE: Final = 5
_GLYPH_W: Final = 6 * _SCALE  # 5 columns + 1 spacing


def _glyph_masks() -> dict[str, np.ndarray[Any, np.dtype[np.bool_]]]:
    masks = {}
    for ch, rows in _FONT.items():
        small = np.array([[c == "1" for c in row] for row in rows], dtype=np.bool_)
        masks[ch] = np.kron(small, np.ones((_SCALE, _SCALE), dtype=np.bool_))
    return masks


# BT.601 limited-range Y, U, V of white, yellow, cyan, green, magenta, red, blue, black.
_BARS: Final = ((180, 128, 128), (162, 44, 142), (131, 156, 44), (112, 72, 58), (84, 184, 198), (65, 100, 212),
                (35, 212, 114), (16, 128, 128))  # fmt: skip


class ClockPatternTrack(VideoStreamTrack):
    """A synthetic camera: colour bars, a moving bar and the wall clock, 640x480 at 30 fps."""

    def __init__(self, width: int = WIDTH, height: int = HEIGHT) -> None:
        super().__init__()
        self.width, self.height = width, height
        self._masks = _glyph_masks()
        base = np.empty((height * 3 // 2, width), dtype=np.uint8)
        y, u, v = self._planes(base)
        bar_w = width // len(_BARS)
        for i, (by, bu, bv) in enumerate(_BARS):
            y[:, i * bar_w : (i + 1) * bar_w] = by
            u[:, i * bar_w // 2 : (i + 1) * bar_w // 2] = bu
            v[:, i * bar_w // 2 : (i + 1) * bar_w // 2] = bv
        y[height - 80 :, :] = 16  # clock band
        u[(height - 80) // 2 :, :] = 128
        v[(height - 80) // 2 :, :] = 128
        self._base = base
        self.frames_sent = 0

    def _planes(
        self, buf: np.ndarray[Any, np.dtype[np.uint8]]
    ) -> tuple[
        np.ndarray[Any, np.dtype[np.uint8]], np.ndarray[Any, np.dtype[np.uint8]], np.ndarray[Any, np.dtype[np.uint8]]
    ]:
        h, w = self.height, self.width
        y = buf[:h]
        u = buf[h : h + h // 4].reshape(h // 2, w // 2)
        v = buf[h + h // 4 :].reshape(h // 2, w // 2)
        return y, u, v

    def draw(self, now: datetime, index: int) -> Plane:
        """The frame for ``now`` (wall clock drawn) and frame ``index`` (moving bar position)."""
        buf = self._base.copy()
        y, _, _ = self._planes(buf)
        x = (index * 8) % self.width
        y[: self.height - 80, x : x + 16] = 235
        text = now.strftime("%H:%M:%S.") + f"{now.microsecond // 1000:03d}"
        top = self.height - 80 + (80 - 7 * _SCALE) // 2
        left = (self.width - len(text) * _GLYPH_W) // 2
        for i, ch in enumerate(text):
            mask = self._masks[ch]
            region = y[top : top + mask.shape[0], left + i * _GLYPH_W : left + i * _GLYPH_W + mask.shape[1]]
            region[mask] = 235
        return buf

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self.draw(datetime.now(UTC), self.frames_sent), format="yuv420p")
        frame.pts = pts
        frame.time_base = time_base if isinstance(time_base, Fraction) else Fraction(time_base)
        self.frames_sent += 1
        return frame


@dataclass(slots=True)
class LocalMedia:
    """The tracks the agent sends, and the players that own the devices (stopped by :meth:`stop`)."""

    video: MediaStreamTrack | None = None
    audio: MediaStreamTrack | None = None
    players: list[Any] = field(default_factory=list)
    camera: str | None = None
    """The camera device in use, or None for the test pattern."""

    def stop(self) -> None:
        """Free the camera and microphone (idempotent)."""
        for track in (self.video, self.audio):
            if track is not None:
                track.stop()
        self.players.clear()


def open_media(
    *, camera: str | None = "/dev/video0", microphone: str | None = None, pattern: bool = True
) -> LocalMedia:
    """Open the camera (V4L2) when present, else the test pattern; the microphone (ALSA) when given and present."""
    media = LocalMedia()
    try:
        if camera and os.path.exists(camera):
            try:
                player = MediaPlayer(
                    camera, format="v4l2", options={"video_size": f"{WIDTH}x{HEIGHT}", "framerate": "30"}
                )
            except (av.FFmpegError, OSError) as exc:
                log.warning("camera %s unusable (%s): sending the test pattern", camera, exc)
            else:
                media.players.append(player)
                media.video, media.camera = player.video, camera
        if media.video is None and pattern:
            media.video = ClockPatternTrack()
        if microphone:
            try:
                mic = MediaPlayer(microphone, format="alsa")
            except (av.FFmpegError, OSError) as exc:
                log.warning("microphone %s unusable (%s): no audio", microphone, exc)
            else:
                media.players.append(mic)
                media.audio = mic.audio
    except BaseException:
        media.stop()
        raise
    return media


class FrameFanout:
    """Reads one source track for every peer connection; a new subscriber gets the newest frame at once.

    aiortc's ``MediaRelay(buffered=False)`` makes a new subscriber wait for the source's next frame (up to one frame
    interval, 33 ms at 30 fps); here the first ``recv`` returns the latest frame, which shortens the time to the first
    frame of every call. Closing a peer connection stops its subscriber, never the source (the camera).
    """

    def __init__(self, source: MediaStreamTrack) -> None:
        self.source = source
        self._latest: Any = None
        self._subscribers: set[_FanoutTrack] = set()
        self._task: asyncio.Task[None] | None = None

    def subscribe(self) -> MediaStreamTrack:
        """A new track fed from the source."""
        track = _FanoutTrack(self)
        if self._latest is not None:
            track.push(self._latest)
        self._subscribers.add(track)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="consult-media-fanout")
        return track

    def _unsubscribe(self, track: _FanoutTrack) -> None:
        self._subscribers.discard(track)

    async def _run(self) -> None:
        while True:
            try:
                frame = await self.source.recv()
            except MediaStreamError:
                frame = None
            self._latest = frame
            for track in list(self._subscribers):
                track.push(frame)
            if frame is None:
                return

    async def aclose(self) -> None:
        """Stop reading the source (the source itself is stopped by :meth:`LocalMedia.stop`)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for track in list(self._subscribers):
            track.push(None)


class _FanoutTrack(MediaStreamTrack):
    def __init__(self, fanout: FrameFanout) -> None:
        super().__init__()
        self.kind = fanout.source.kind
        self._fanout = fanout
        self._frame: Any = None
        self._ended = False
        self._event = asyncio.Event()

    def push(self, frame: Any) -> None:
        if frame is None:
            self._ended = True
        else:
            self._frame = frame
        self._event.set()

    async def recv(self) -> Any:
        await self._event.wait()
        self._event.clear()
        if self._ended or self.readyState != "live":
            raise MediaStreamError
        return self._frame

    def stop(self) -> None:
        super().stop()
        self._fanout._unsubscribe(self)
