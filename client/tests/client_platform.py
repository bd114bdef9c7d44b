"""The real platform for the client's tests, started the way ``make run`` starts it: the profile, TTS (a tiny
random-weight model, so synthesis is quick and runs to ``max_new_tokens``) and ASR (Whisper tiny.en) processes
behind a real gateway, with the internal credential between them (tests/e2e_support.py, shared with the
end-to-end tests, which this module puts on the path)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from e2e_support import (
    SERVING,
    ServiceProcess,
    create_key,
    service,
    service_env,
    start_gateway,
    with_internal_token,
)

from tools.tiny_model import build_tiny_model
from voice_client import NotFound, RetryPolicy, Unavailable, VoiceClient

START_SECONDS = 180.0
DEFAULT_FRAMES = 24
SERVICES = ("voice.profiles.v1.ProfileService", "voice.tts.v1.TtsService", "voice.asr.v1.AsrService")


@dataclass
class Platform:
    env: dict[str, str]
    log_dir: Path
    profiles: ServiceProcess
    gateway: ServiceProcess
    admin_key: str  # every scope, tenant "client-tests"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"

    def restart_profiles(self) -> None:
        """Starts the profile service again on the same port, after a test stopped it (``wait_until_serving``
        waits until it and the gateway's view of it serve)."""
        self.profiles.close()
        self.profiles = ServiceProcess(self.env, self.log_dir)

    def wait_until_serving(self) -> None:
        """Until the profile service serves the gateway and the TTS service again: TTS reaches it over a channel
        of its own, which reconnects on its own back-off (up to 3 s), so a TTS call that reads a profile must get
        the profile service's answer (NOT_FOUND for an unknown id) rather than UNAVAILABLE."""
        self.profiles.wait_for(SERVING, timeout=60)
        self.gateway.wait_for(SERVING, timeout=60, service=SERVICES[0])
        deadline = time.monotonic() + 30
        with VoiceClient(self.target, api_key=self.admin_key, retry=RetryPolicy(max_attempts=1)) as client:
            while True:
                try:
                    client.tts.synthesize("Are you there?", str(uuid.uuid4()), max_new_tokens=1)
                except NotFound:
                    return
                except Unavailable:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)


@contextlib.contextmanager
def running_platform(root: Path) -> Iterator[Platform]:
    # A talker that never chooses EOS: every request runs to its max_new_tokens frames (12.5 a second of audio).
    tiny = build_tiny_model(root / "tiny-qwen3-tts", seed=0, never_eos=True)
    # A request that sets no max_new_tokens (docs/client.md's examples, as a user writes them) stops after 24
    # frames (about 2 s) per piece of text, as a real model stops at the end of the sentence.
    generation_config = tiny / "generation_config.json"
    generation_config.write_text(
        json.dumps({**json.loads(generation_config.read_text()), "max_new_tokens": DEFAULT_FRAMES + 1})
    )
    env = with_internal_token(
        service_env(
            root / "data",
            TTS_MODEL=str(tiny),
            TTS_PRELOAD="true",
            ASR_PRELOAD="true",
            ASR_CPU_THREADS="1",
            HF_HUB_CACHE=str(root / "hub"),
            OMP_NUM_THREADS="1",
            GATEWAY_KEY_CACHE_SECONDS="0.5",
        )
    )
    log_dir = root / "logs"
    with contextlib.ExitStack() as stack:
        profiles = ServiceProcess(env, log_dir)
        current: list[Platform] = []
        # A test restarts the profile process: close whichever is current at the end.
        stack.callback(lambda: (current[0].profiles if current else profiles).close())
        tts = stack.enter_context(service(env, log_dir, module="voice_tts", prefix="TTS"))
        asr = stack.enter_context(service(env, log_dir, module="voice_asr", prefix="ASR"))
        profiles.wait_for(SERVING, timeout=60)
        gateway = stack.enter_context(contextlib.closing(start_gateway(env, log_dir)))
        tts.wait_for(SERVING, timeout=START_SECONDS, service=SERVICES[1])
        asr.wait_for(SERVING, timeout=START_SECONDS, service=SERVICES[2])
        for name in SERVICES:
            gateway.wait_for(SERVING, timeout=30, service=name)
        current.append(Platform(env, log_dir, profiles, gateway, create_key(env, "client-tests")))
        yield current[0]
