"""Text arriving in pieces, audio going out (SynthesizeDuplex): each complete sentence is spoken as soon as it has
arrived, while the client may still be sending the rest.

A task of the session reads the text as it comes, cuts it into sentences
(:class:`~voice_tts.text_segments.IncrementalSegmenter`) and queues them; :meth:`DuplexSession.audio` speaks them
one after another. Sentence ``i`` is sampled with ``piece_seed(seed, i)``; the sentences' 24 kHz audio goes through
one encoder, so the chunks together are one valid stream in the requested format.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager

import numpy as np

from voice_common.audio import AudioEncoding, StreamingEncoder
from voice_common.errors import InvalidArgument
from voice_common.server.request_streams import next_item
from voice_tts.synthesis_service import PreparedSynthesis, SynthesisService
from voice_tts.synthesis_types import (
    MODEL_SAMPLE_RATE,
    SynthesisRequest,
    SynthesisResult,
    SynthesisSpec,
    SynthesisSummary,
    piece_seed,
)
from voice_tts.text_segments import IncrementalSegmenter
from voice_tts.voices import Voice


class DuplexSession:
    """One SynthesizeDuplex call: made when the call arrives (its timings start then), :meth:`open` once its
    config is known, then :meth:`audio` and :meth:`finish`."""

    def __init__(self, service: SynthesisService, tenant: str, *, rpc: str) -> None:
        self._service = service
        self._tenant = tenant
        self._rpc = rpc
        self._arrival = service.clock()
        self._prepared: PreparedSynthesis | None = None
        self._pieces: asyncio.Queue[str | None] = asyncio.Queue()
        self._received: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self._first_audio: float | None = None
        self._result: SynthesisResult | None = None

    @property
    def request(self) -> SynthesisRequest:
        """The call's settings and voice (its text is a stand-in: it is still arriving)."""
        assert self._prepared is not None, "open() first"
        return self._prepared.request

    @asynccontextmanager
    async def open(
        self, spec: SynthesisSpec, voice: Voice, *, store: bool, texts: AsyncIterator[str]
    ) -> AsyncIterator[DuplexSession]:
        """Check ``spec`` (its text comes as ``texts``), make the voice prompt and start reading ``texts``; the
        model is held and the reading stops when the block ends."""
        async with self._service.prepare(
            self._tenant, spec, voice, store=store, rpc=self._rpc, arrival=self._arrival, text_follows=True
        ) as prepared:
            self._prepared = prepared
            self._reader = asyncio.create_task(self._read(texts))
            try:
                yield self
            finally:
                await self._stop_reading()

    async def _read(self, texts: AsyncIterator[str]) -> None:
        limits = self._service.limits
        segmenter = IncrementalSegmenter(limits.max_piece_chars)
        async for text in texts:
            self._received.append(text)
            if sum(map(len, self._received)) > limits.max_text_chars:
                raise InvalidArgument(
                    f"the text is longer than {limits.max_text_chars} characters; split it over several calls",
                    field="text",
                )
            for piece in segmenter.feed(text):
                self._pieces.put_nowait(piece)
        for piece in segmenter.finish():
            self._pieces.put_nowait(piece)
        self._pieces.put_nowait(None)

    async def _stop_reading(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader

    async def audio(self, cancelled: Callable[[], bool]) -> AsyncGenerator[bytes, None]:
        """The encoded audio of every sentence, as it is made; raises what reading the text raised, and
        InvalidArgument if the text was empty. ``cancelled()`` turning true stops it within a frame."""
        assert self._prepared is not None and self._reader is not None, "open() first"
        # The voice's check first (the text comes later anyway): no audio with a prompt that may be stale.
        prepared = self._prepared = await self._service.confirm_voice(self._prepared)
        reader = self._reader
        request = prepared.request
        encoder = StreamingEncoder(request.encoding, MODEL_SAMPLE_RATE, request.sample_rate)
        pcm: list[np.ndarray] = []
        queue_wait = service = 0.0
        index = 0
        try:
            while True:
                piece = await next_item(self._pieces, reader)
                if piece is None:
                    break
                # Each sentence as raw 24 kHz audio: the session's one encoder makes the requested format.
                sentence = dataclasses.replace(
                    request,
                    text=piece,
                    seed=piece_seed(request.seed, index),
                    encoding=AudioEncoding.LINEAR16,
                    sample_rate=MODEL_SAMPLE_RATE,
                )
                index += 1
                stream = self._service.stream(prepared, sentence, cancelled)
                try:
                    async for event in stream:
                        if not event.audio:
                            continue
                        samples = np.frombuffer(event.audio, dtype="<i2").astype(np.float32) / 32768.0
                        encoded = encoder.encode(samples)
                        if encoded:
                            if self._first_audio is None:
                                self._first_audio = self._service.clock()
                            yield encoded
                finally:
                    await stream.aclose()
                result = stream.result
                if result is None or result.stop_reason == "stopped":
                    return  # cancelled: nothing to finish
                pcm.append(result.pcm)
                queue_wait += result.queue_wait_s
                service += result.real_time_factor * result.duration_seconds
            if index == 0:
                raise InvalidArgument("the text is empty; give the words to speak", field="text")
            tail = encoder.flush()
            if tail:
                yield tail
        finally:
            encoder.close()
            await self._stop_reading()
        whole = np.concatenate(pcm)
        duration = whole.size / MODEL_SAMPLE_RATE
        self._result = SynthesisResult(
            seed=request.seed,
            duration_seconds=duration,
            time_to_first_audio_s=0.0,
            total_s=0.0,
            queue_wait_s=queue_wait,
            real_time_factor=service / duration if duration > 0 else 0.0,
            stop_reason="eos",
            pcm=whole,
        )

    async def finish(self) -> SynthesisSummary | None:
        """After :meth:`audio` ended: the summary of the whole text (the generation stored first, if asked); None
        if it was stopped (the client went away), when nothing is stored and there is nobody to tell."""
        if self._result is None or self._prepared is None:
            return None
        return await self._service.record(
            self._prepared, "".join(self._received), self._result, self._first_audio
        )
