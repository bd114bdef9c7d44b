"""``python -m voice_tts``: run the TTS service until SIGTERM/SIGINT (see voice_common.server.model_service)."""

from __future__ import annotations

from voice_common.config import CommonSettings
from voice_common.server.model_service import ModelService, ModelServiceApp, run
from voice_tts.settings import TtsSettings


async def open_app(common: CommonSettings, settings: TtsSettings) -> ModelServiceApp:
    from voice_tts.app import TtsApp  # torch and qwen_tts: only once the signal handlers are in place

    app = await TtsApp.open(common, settings)
    app.start_background()
    return app


SERVICE = ModelService("TTS", "voice_tts", TtsSettings, "TTS_", open_app)


def main() -> None:
    run(SERVICE)


if __name__ == "__main__":
    main()
