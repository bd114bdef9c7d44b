"""``voice models status|load|unload [tts|asr]``: which model each speech service serves, on what, and how much
memory it holds; loading and unloading need a key with the ``admin`` scope.

A load replaces the serving model only once the new one works (the old one serves meanwhile), so it may take as
long as a download: a spinner shows the time on a terminal. ``--json`` prints the API's ``ModelStatus`` messages,
one per service (``{"tts": …, "asr": …}``).
"""

from __future__ import annotations

import argparse

from voice.asr.v1 import asr_service_pb2 as asr_pb
from voice.tts.v1 import tts_service_pb2 as tts_pb
from voice_cli.progress_bars import spinner
from voice_cli.rendering import NOTHING, as_dict, enum_name, print_json, seconds, size, table
from voice_client import VoiceClient

SERVICES = ("tts", "asr")
Status = tts_pb.ModelStatus | asr_pb.ModelStatus


def _print(statuses: dict[str, Status], as_json: bool) -> None:
    if as_json:
        print_json({service: as_dict(status) for service, status in statuses.items()})
        return
    rows = []
    for service, status in statuses.items():
        if isinstance(status, tts_pb.ModelStatus):
            precision = status.dtype
            memory = size(status.gpu_memory_bytes) if status.gpu_memory_bytes else NOTHING
            state = tts_pb.ModelState.Name(status.state)
        else:
            precision, memory, state = status.compute_type, NOTHING, asr_pb.ModelState.Name(status.state)
        loaded_in = (
            seconds(status.load_time.ToTimedelta().total_seconds())
            if status.HasField("load_time")
            else NOTHING
        )
        rows.append(
            (
                service,
                enum_name(state, "MODEL_STATE_"),
                status.model or NOTHING,
                status.device or NOTHING,
                precision or NOTHING,
                memory,
                status.queue_depth,
                loaded_in,
                # The service's own words matter when it is not serving (a failed load, a download going on).
                status.message if state != "MODEL_STATE_READY" else "",
            )
        )
    table(
        ("SERVICE", "STATE", "MODEL", "DEVICE", "PRECISION", "GPU MEMORY", "QUEUE", "LOADED IN", "NOTE"),
        rows,
        empty="no services",
    )


def status(client: VoiceClient, args: argparse.Namespace) -> int:
    chosen = (args.service,) if args.service else SERVICES
    statuses: dict[str, Status] = {}
    for service in chosen:
        statuses[service] = client.tts.model_status() if service == "tts" else client.asr.model_status()
    _print(statuses, args.json)
    return 0


def load(client: VoiceClient, args: argparse.Namespace) -> int:
    with spinner(f"loading the {args.service} model"):
        if args.service == "tts":
            loaded: Status = client.tts.load_model(args.model, device=args.device, dtype=args.dtype)
        else:
            loaded = client.asr.load_model(args.model, device=args.device, compute_type=args.dtype)
    _print({args.service: loaded}, args.json)
    return 0


def unload(client: VoiceClient, args: argparse.Namespace) -> int:
    if args.service == "tts":
        unloaded: Status = client.tts.unload_model()
    else:
        unloaded = client.asr.unload_model()
    _print({args.service: unloaded}, args.json)
    return 0
