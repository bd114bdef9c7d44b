"""The OpenAI-compatible HTTP face served by the gateway process (GatewayApp): its loopback gRPC client works when
the public port speaks TLS, keys are the gRPC keys, errors come in OpenAI's shape, and a drain closes the port."""

from __future__ import annotations

from pathlib import Path

import httpx2 as httpx
import pytest
from gateway_harness import start_stack

from voice_common.config import CommonSettings
from voice_testing.certificates import write_certificates
from voice_testing.ports import free_port


async def test_the_http_face_of_a_tls_gateway(gateway_common: CommonSettings, tmp_path: Path) -> None:
    public = write_certificates(tmp_path / "public")
    port = free_port()
    stack = await start_stack(
        gateway_common,
        {"tls_cert_file": public.server_cert, "tls_key_file": public.server_key, "http_port": port},
    )
    try:
        assert stack.gateway.http_port == port
        key = await stack.key("openai")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1", timeout=10) as http:
            # The TTS and ASR of this stack do not answer: the aliases are listed all the same.
            models = await http.get("/models", headers={"authorization": f"Bearer {key}"})
            assert models.status_code == 200, models.text
            assert {"tts-1", "whisper-1"} <= {model["id"] for model in models.json()["data"]}
            voices = await http.get("/audio/voices", headers={"authorization": f"Bearer {key}"})
            assert voices.status_code == 200 and voices.json() == {"object": "list", "data": []}

            missing = await http.get("/models")
            assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
            unknown = await http.get("/models", headers={"authorization": "Bearer vk_notakey0_" + "x" * 43})
            assert unknown.status_code == 401
            assert set(unknown.json()["error"]) == {"message", "type", "param", "code"}
            nowhere = await http.get("/nowhere", headers={"authorization": f"Bearer {key}"})
            assert nowhere.status_code == 404 and "error" in nowhere.json()
            # The voice is looked up (profiles, which answer) before the TTS is called.
            speech = await http.post(
                "/audio/speech",
                headers={"authorization": f"Bearer {key}"},
                json={"model": "tts-1", "voice": "nobody", "input": "Hello."},
            )
            assert speech.status_code == 404 and speech.json()["error"]["param"] == "voice"
    finally:
        await stack.gateway.drain(grace=1)
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=3) as http:
            await http.get(f"http://127.0.0.1:{port}/v1/models")
    await stack.close()
