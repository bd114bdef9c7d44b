"""``python -m voice_asr``: run the ASR service until SIGTERM/SIGINT (see voice_common.server.model_service)."""

from __future__ import annotations

from voice_asr.settings import AsrSettings
from voice_common.config import CommonSettings
from voice_common.server.model_service import ModelService, ModelServiceApp, run


async def open_app(common: CommonSettings, settings: AsrSettings) -> ModelServiceApp:
    from voice_asr.app import (
        AsrApp,  # CTranslate2, faster-whisper, onnxruntime: once the signal handlers are set
    )

    return AsrApp.open(common, settings)


SERVICE = ModelService("ASR", "voice_asr", AsrSettings, "ASR_", open_app)


def main() -> None:
    run(SERVICE)


if __name__ == "__main__":
    main()
