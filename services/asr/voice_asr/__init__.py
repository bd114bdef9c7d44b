"""The ASR service: speech to text with faster-whisper, whole files and live streams."""
