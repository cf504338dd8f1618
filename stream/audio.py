"""The source's audio in an output video (``VideoSink(audio=...)``): copied packet by packet where the output
container takes the codec, else decoded and re-encoded (AAC, Opus, MP3 or PCM, the first the container takes).

Times follow the video: the source's first video frame is time 0 of the output (``AudioTrack.start`` is its time in
the file's clock), audio before it is left out (but for the one packet a decoder needs to start) and audio after the
last written frame is cut (``finish(end)``), so a run stopped early keeps its sound in sync. The sink calls
``write_until(t)`` after each video frame, which keeps the two streams interleaved in the file.
"""
from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any, Iterator

from model.errors import UserError
from stream.frames import AudioTrack

log = logging.getLogger(__name__)

# re-encoding, in order of preference: the first the output container accepts and this PyAV build has
REENCODE = ("aac", "libopus", "opus", "libmp3lame", "mp3", "pcm_s16le")
OPUS_RATES = (48000, 24000, 16000, 12000, 8000)


class AudioError(UserError):
    """The source's audio cannot go into this output (one line)."""


def probe_audio(container: Any, path: str, start: float) -> AudioTrack | None:
    """The first audio stream of an open input ``container`` as an ``AudioTrack`` (None without one)."""
    if not container.streams.audio:
        return None
    stream = container.streams.audio[0]
    return AudioTrack(path=path, index=0, start=float(start), codec=stream.codec_context.name)


class AudioMuxer:
    """Adds the audio stream of ``track`` to ``output`` (an open PyAV output container, before its first packet)
    and muxes the audio as the video advances. ``copied``: packets are copied (else re-encoded to ``codec``)."""

    def __init__(self, track: AudioTrack, output: Any) -> None:
        import av

        self.track = track
        self._out = output
        try:
            self._in = av.open(track.path, mode="r")
            self._src = self._in.streams.audio[track.index]
        except (av.error.FFmpegError, OSError, IndexError) as exc:
            raise AudioError(f"cannot read the audio of {track.path}: {exc}") from exc
        try:
            self.stream = output.add_stream_from_template(self._src)
            self.copied = True
        except ValueError:  # this container does not take the codec: re-encode
            self.stream = self._add_encoder()
            self.copied = False
        self.codec = self.stream.codec_context.name
        self._offset = Fraction(track.start).limit_denominator(1 << 30)
        self._items = self._packets() if self.copied else self._frames()
        self._next: tuple[float, Any] | None = None
        self._resampler = None
        self._next_pts: int | None = None
        self._started = False
        self._preroll: Any = None

    def _add_encoder(self) -> Any:
        import av

        ctx = self._src.codec_context
        layout = ctx.layout.name if ctx.layout and ctx.layout.nb_channels <= 2 else "stereo"
        for name in REENCODE:
            try:
                av.codec.Codec(name, "w")
            except Exception:
                continue
            rate = ctx.sample_rate or 48000
            if "opus" in name and rate not in OPUS_RATES:
                rate = 48000
            try:
                stream = self._out.add_stream(name, rate=rate)
            except ValueError:  # not in this container
                continue
            stream.layout = layout
            if name == "aac":
                stream.bit_rate = 128_000
            stream.codec_context.time_base = Fraction(1, rate)
            stream.time_base = Fraction(1, rate)
            stream.codec_context.open()  # now: its frame size is needed before the file's header is written
            return stream
        raise AudioError(f"no audio encoder for {self._out.format.name} among {', '.join(REENCODE)}")

    # -- the source, in output time ----------------------------------------------------------------------------------
    def _packets(self) -> Iterator[tuple[float, Any]]:
        """Source packets with their output start time (s), before the first video frame's dropped (but the last
        of them: a decoder's pre-roll)."""
        for packet in self._in.demux(self._src):
            if packet.pts is None or packet.size == 0:
                continue
            tb = packet.time_base
            t = packet.pts * tb - self._offset
            end = t + (packet.duration or 0) * tb
            if end <= 0:
                self._preroll = packet
                continue
            yield float(t), packet

    def _frames(self) -> Iterator[tuple[float, Any]]:
        """Decoded source frames with their output start time (s); frames that end before the video starts skipped."""
        for packet in self._in.demux(self._src):
            for frame in packet.decode():
                if frame.pts is None:
                    continue
                t = frame.pts * frame.time_base - self._offset
                if t + Fraction(frame.samples, frame.sample_rate) <= 0:
                    continue
                yield float(t), frame

    # -- muxing ------------------------------------------------------------------------------------------------------
    def write_until(self, t: float) -> None:
        """Mux the audio that starts before output time ``t`` (s). A fault reading the source raises AudioError;
        one writing the output (disk, muxer, encoder) propagates as it is."""
        import av

        while True:
            if self._next is None:
                try:
                    self._next = next(self._items, None)
                except av.error.FFmpegError as exc:
                    self._items = iter(())
                    raise AudioError(f"cannot read the audio of {self.track.path}: {exc}") from exc
                if self._next is None:
                    return
            start, item = self._next
            if start >= t:
                return
            self._next = None
            self._mux_copy(item) if self.copied else self._encode(start, item)

    def finish(self, end: float) -> None:
        """Mux the audio up to the video's end ``end`` (s), flush the encoder, close the source."""
        try:
            self.write_until(end)
            if not self.copied and self._started:
                for frame in self._resampler.resample(None):  # the samples the resampler still holds
                    self._encode_resampled(frame)
                for packet in self.stream.encode(None):
                    self._out.mux(packet)
        finally:
            self.close()

    def close(self) -> None:
        """Close the source (idempotent)."""
        self._items = iter(())
        self._next = None
        try:
            self._in.close()
        except Exception:
            pass

    def _mux_copy(self, packet: Any) -> None:
        if not self._started and self._preroll is not None:
            self._mux_shifted(self._preroll)
        self._started = True
        self._mux_shifted(packet)

    def _mux_shifted(self, packet: Any) -> None:
        shift = int(round(self._offset / packet.time_base))
        if packet.dts is not None:
            packet.dts -= shift
        packet.pts -= shift
        packet.stream = self.stream
        self._out.mux(packet)

    def _encode(self, start: float, frame: Any) -> None:
        import av

        cc = self.stream.codec_context
        if self._resampler is None:
            self._resampler = av.AudioResampler(format=cc.format, layout=cc.layout, rate=cc.sample_rate,
                                                frame_size=cc.frame_size or None)
            self._next_pts = max(0, int(round(start * cc.sample_rate)))  # a late start stays late
        frame.pts = None
        for out in self._resampler.resample(frame):
            self._encode_resampled(out)

    def _encode_resampled(self, frame: Any) -> None:
        rate = self.stream.codec_context.sample_rate
        frame.pts = self._next_pts
        frame.time_base = Fraction(1, rate)
        self._next_pts += frame.samples
        self._started = True
        for packet in self.stream.encode(frame):
            self._out.mux(packet)
