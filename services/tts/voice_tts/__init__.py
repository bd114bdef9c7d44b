"""Text-to-speech service: Qwen3-TTS voice cloning (12 Hz Base models)."""
