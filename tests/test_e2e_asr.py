"""End to end: ``python -m voice_asr`` as a real process on its default (offline) model: it becomes SERVING,
transcribes real speech, and stops cleanly on SIGTERM."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_support import SERVING, free_port, service, service_env, stop

from voice.asr.v1 import asr_service_pb2 as pb
from voice.asr.v1 import asr_service_pb2_grpc as pb_grpc
from voice_testing.speech import SENTENCE_WER_BAR, SENTENCES, speech_wav, wer

pytestmark = pytest.mark.slow
SERVICE_NAME = "voice.asr.v1.AsrService"
TEXT = SENTENCES[0]


def test_the_asr_process_serves_the_default_model(tmp_path: Path) -> None:
    env = service_env(
        tmp_path / "data",
        ASR_PORT=str(free_port()),
        ASR_METRICS_PORT=str(free_port()),
        ASR_PRELOAD="true",  # NOT_SERVING until the model is in memory
        ASR_CPU_THREADS="2",
    )
    with service(env, tmp_path / "logs", module="voice_asr", prefix="ASR") as asr:
        asr.wait_for(SERVING, timeout=60, service=SERVICE_NAME)
        stub = pb_grpc.AsrServiceStub(asr.channel)
        response = stub.Transcribe(pb.TranscribeRequest(content=speech_wav(TEXT, "slt")), timeout=60)
        assert wer(TEXT, response.text) <= SENTENCE_WER_BAR, response.text
        status = stub.GetModelStatus(pb.GetModelStatusRequest(), timeout=5).status
        assert status.state == pb.MODEL_STATE_READY and status.load_time.ToNanoseconds() > 0
        assert "voice_asr_audio_seconds_total" in asr.metrics()
        assert stop(asr) == 0, asr.describe()
