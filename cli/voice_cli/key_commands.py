"""``voice keys create|list|revoke``: the tenant's API keys (the caller's key needs the ``admin`` scope).

Human output by default; ``--json`` prints the API's messages (``create``'s holds the secret, shown only this
once).
"""

from __future__ import annotations

import argparse
import time

from voice.auth.v1 import api_key_service_pb2 as keys_pb
from voice_cli.rendering import NOTHING, print_json, table, when
from voice_client import VoiceClient


def create(client: VoiceClient, args: argparse.Namespace) -> int:
    ttl = args.ttl_days * 86400 if args.ttl_days is not None else None
    created = client.keys.create(
        args.name, args.scope, requests_per_second=args.rps, burst=args.burst,
        max_concurrent_streams=args.max_streams, ttl=ttl,
    )  # fmt: skip
    if args.json:
        print_json(created)
        return 0
    record = created.api_key
    expiry = f", expires {when(record.expire_time)} UTC" if record.HasField("expire_time") else ""
    print(
        f'created key "{record.name}" ({record.id}) for tenant {record.tenant}: {", ".join(record.scopes)}{expiry}'
    )
    print("the secret, shown only this once:")
    print(created.secret)
    return 0


def _state(key: keys_pb.ApiKey, now: float) -> str:
    if key.HasField("revoke_time"):
        return "revoked"
    if key.HasField("expire_time") and key.expire_time.seconds <= now:
        return "expired"
    return "active"


def _limits(limits: keys_pb.RateLimits) -> str:
    rate = f"{limits.requests_per_second:g}/s" if limits.requests_per_second else "default"
    burst = f"burst {limits.burst}" if limits.burst else ""
    streams = f"{limits.max_concurrent_streams} streams" if limits.max_concurrent_streams else ""
    return " ".join(part for part in (rate, burst, streams) if part)


def list_keys(client: VoiceClient, args: argparse.Namespace) -> int:
    keys = client.keys.list(include_inactive=args.all)
    if args.json:
        print_json(keys_pb.ListApiKeysResponse(api_keys=keys))
        return 0
    now = time.time()
    rows = [
        (
            key.id,
            key.prefix,
            key.name,
            ",".join(key.scopes),
            _limits(key.rate_limits),
            when(key.create_time),
            when(key.last_used_time),
            when(key.expire_time) if key.HasField("expire_time") else NOTHING,
            _state(key, now),
        )
        for key in keys
    ]
    table(
        ("ID", "PREFIX", "NAME", "SCOPES", "LIMITS", "CREATED (UTC)", "LAST USED", "EXPIRES", "STATE"),
        rows,
        empty="no keys",
    )
    return 0


def revoke(client: VoiceClient, args: argparse.Namespace) -> int:
    key = client.keys.revoke(args.id)
    if args.json:
        print_json(keys_pb.RevokeApiKeyResponse(api_key=key))
    else:
        print(f'revoked key "{key.name}" ({key.prefix}) at {when(key.revoke_time)} UTC')
    return 0
