"""``voice-admin``: operator commands for deployments.

voice-admin migrate                  bring the database schema to the current version
voice-admin doctor [--delete-orphans] list rows without objects and objects without rows
voice-admin sweep                    delete expired data and retry failed object deletes now
voice-admin models pull [tts|asr] [--model M]
                                     download a model into the Hugging Face cache, verified (`make models`)
voice-admin keys create --tenant T --name N --scope S [--scope S...] [--rps X] [--burst N] [--max-streams N]
                        [--ttl-days D]
                                     make an API key; the key is printed on stdout this once, never again
voice-admin keys list [--tenant T] [--all] [--json]
                                     API keys (every tenant's unless --tenant; revoked and expired too with --all)
voice-admin keys revoke ID_OR_PREFIX revoke a key, named by its id or its prefix (vk_ and 8 characters)
voice-admin keys ensure-local        `make run`: keep the admin key in <data dir>/admin-api-key if it still works,
                                     else make one for VOICE_DEFAULT_TENANT and save it there (mode 0600)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tqdm import tqdm

from voice_common import api_keys as key_format
from voice_common.config import CommonSettings
from voice_common.errors import DomainError, Unauthenticated
from voice_common.model_download import (
    DownloadProgress,
    DownloadReport,
    ModelDownloader,
    ModelDownloadError,
    size_text,
)
from voice_common.observability import configure_logging
from voice_profiles.domain.api_keys import ApiKeyRecord, ApiKeys, RateLimits, check_tenant
from voice_profiles.settings import ProfilesSettings

# The database's modules (SQLAlchemy, alembic, the profile service's app) are imported inside the commands that use
# them: `voice-admin models pull` also runs in the TTS and ASR images, which carry no database packages.


def _migrate() -> int:
    from voice_common.db import redact_url
    from voice_profiles.__main__ import load_settings
    from voice_profiles.repositories.schema import pending_revisions, upgrade_to_head

    common, _ = load_settings()
    url = common.resolved_database_url
    if common.database_url is None:
        common.data_dir.mkdir(parents=True, exist_ok=True)
    before = pending_revisions(url)
    upgrade_to_head(url)
    print(f"{redact_url(url)}: applied {len(before)} migration(s); schema is current")
    return 0


async def _doctor(delete_orphans: bool, as_json: bool) -> int:
    from voice_profiles.__main__ import load_settings
    from voice_profiles.app import ProfilesApp

    common, settings = load_settings()
    app = await ProfilesApp.open(common, settings, migrate=False)
    try:
        report = await app.doctor.examine()
        deleted = await app.doctor.delete_orphans(report) if delete_orphans else 0
    finally:
        await app.close()
    if as_json:
        print(
            json.dumps(
                {
                    "rows_without_objects": report.rows_without_objects,
                    "objects_without_rows": report.objects_without_rows,
                    "pending_deletions": report.pending_deletions,
                    "prompts_owned": report.prompts_owned,
                    "prompts_orphaned": report.prompts_orphaned,
                    "orphans_deleted": deleted,
                }
            )
        )
    else:
        print(f"rows whose object is missing: {len(report.rows_without_objects)}")
        for key in report.rows_without_objects:
            print(f"  missing  {key}")
        print(f"objects no row owns: {len(report.objects_without_rows)}")
        for key in report.objects_without_rows:
            print(f"  orphan   {key}")
        print(f"object deletes waiting for the sweeper: {report.pending_deletions}")
        print(
            f"TTS voice prompts: {report.prompts_owned} owned, {report.prompts_orphaned} orphaned "
            "(among the orphans above; tts/prompts/ is the old layout, nothing reads it)"
        )
        if delete_orphans:
            print(f"deleted {deleted} orphaned object(s)")
    return 0 if report.healthy or (delete_orphans and not report.rows_without_objects) else 1


async def _sweep() -> int:
    from voice_profiles.__main__ import load_settings
    from voice_profiles.app import ProfilesApp

    common, settings = load_settings()
    app = await ProfilesApp.open(common, settings, migrate=False)
    try:
        report = await app.sweeper.sweep_once()
    finally:
        await app.close()
    print(
        f"deleted {report.profiles_deleted} expired profile(s), {report.generations_deleted} expired "
        f"generation(s), {report.objects_deleted} pending object(s); {report.objects_still_failing} still failing; "
        f"forgot {report.request_ids_forgotten} upload request id(s); removed {report.abandoned_writes_removed} "
        "abandoned write(s)"
    )
    return 0


# -- keys ------------------------------------------------------------------------------------------

LOCAL_KEY_NAME = "local admin"


@asynccontextmanager
async def _api_keys(common: CommonSettings, settings: ProfilesSettings) -> AsyncIterator[ApiKeys]:
    """The key store alone (no object store); the schema is brought up to date where the service would do it at
    its start (the embedded SQLite database, or PROFILES_MIGRATE_ON_START), so a first command works before the
    service ever ran."""
    from voice_common.db import create_engine, utc_now
    from voice_profiles.repositories.api_key_repository import ApiKeyDatabase
    from voice_profiles.repositories.schema import upgrade_to_head_async

    url = common.resolved_database_url
    if common.database_url is None:
        common.data_dir.mkdir(parents=True, exist_ok=True)
    migrate = settings.migrate_on_start
    if migrate if migrate is not None else url.startswith("sqlite"):
        await upgrade_to_head_async(url)
    engine = create_engine(url)
    try:
        yield ApiKeys(ApiKeyDatabase(engine), utc_now)
    finally:
        await engine.dispose()


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value is not None else "-"


def _key_json(record: ApiKeyRecord, now: datetime) -> dict[str, Any]:
    def instant(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": record.id,
        "prefix": record.prefix,
        "tenant": record.tenant,
        "name": record.name,
        "scopes": list(record.scopes),
        "rate_limits": {
            "requests_per_second": record.limits.requests_per_second,
            "burst": record.limits.burst,
            "max_concurrent_streams": record.limits.max_concurrent_streams,
        },
        "created": instant(record.created_at),
        "last_used": instant(record.last_used_at),
        "revoked": instant(record.revoked_at),
        "expires": instant(record.expires_at),
        "state": record.state(now),
    }


def _print_table(records: list[ApiKeyRecord], now: datetime) -> None:
    header = ("PREFIX", "TENANT", "NAME", "SCOPES", "CREATED", "LAST USED", "STATE")
    rows = [
        (
            r.prefix,
            r.tenant,
            r.name,
            ",".join(r.scopes),
            _when(r.created_at),
            _when(r.last_used_at),
            r.state(now)
            if r.expires_at is None or r.revoked_at
            else f"{r.state(now)} (expires {_when(r.expires_at)})",
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


async def _keys_create(args: argparse.Namespace) -> int:
    from voice_profiles.__main__ import load_settings

    common, settings = load_settings()
    check_tenant(args.tenant, "--tenant")
    limits = RateLimits(args.rps, args.burst, args.max_streams)
    ttl = timedelta(days=args.ttl_days) if args.ttl_days is not None else None
    async with _api_keys(common, settings) as api_keys:
        created = await api_keys.create(args.tenant, args.name, args.scope, limits, ttl)
    record = created.record
    print(created.secret)
    expiry = f", expires {_when(record.expires_at)}" if record.expires_at else ""
    print(
        f"voice-admin: created API key {record.prefix} (id {record.id}) for tenant {record.tenant!r} with scopes "
        f"{' '.join(record.scopes)}{expiry}. The key above is shown only this once: store it now.",
        file=sys.stderr,
    )
    return 0


async def _keys_list(args: argparse.Namespace) -> int:
    from voice_common.db import utc_now
    from voice_profiles.__main__ import load_settings

    common, settings = load_settings()
    if args.tenant is not None:
        check_tenant(args.tenant, "--tenant")
    async with _api_keys(common, settings) as api_keys:
        records = await api_keys.list(args.tenant, include_inactive=args.all)
    now = utc_now()
    if args.json:
        print(json.dumps([_key_json(record, now) for record in records], indent=2))
    else:
        _print_table(records, now)
    return 0


async def _keys_revoke(id_or_prefix: str) -> int:
    from voice_profiles.__main__ import load_settings

    common, settings = load_settings()
    async with _api_keys(common, settings) as api_keys:
        record = await api_keys.revoke_any_tenant(id_or_prefix)
    print(
        f"revoked API key {record.prefix} ({record.name!r}, tenant {record.tenant!r}) at {_when(record.revoked_at)}"
    )
    return 0


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner alone: the file is made with mode 0600 (never wider, not
    even for a moment) under a temporary name, then renamed over any old file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


async def _keys_ensure_local() -> int:
    from voice_profiles.__main__ import load_settings

    common, settings = load_settings()
    path = key_format.local_key_path(common.data_dir)
    async with _api_keys(common, settings) as api_keys:
        reason = "none was saved yet"
        if path.exists():
            saved = path.read_text().strip()
            if not key_format.well_formed(saved):
                reason = f"{path} does not hold a key"
            else:
                try:
                    await api_keys.verify(key_format.key_sha256(saved))
                except Unauthenticated as error:
                    reason = f"the saved one no longer works ({error.message})"
                else:
                    print(f"using the admin key in {path}")
                    return 0
        created = await api_keys.create(
            common.default_tenant, LOCAL_KEY_NAME, key_format.SCOPES, RateLimits(), None
        )
    _write_private(path, created.secret + "\n")
    print(created.secret)
    print(
        f"voice-admin: created an admin API key ({created.record.prefix}) for tenant {common.default_tenant!r} "
        f"because {reason}; it is saved in {path} (mode 0600) and shown only this once",
        file=sys.stderr,
    )
    return 0


async def _keys(args: argparse.Namespace) -> int:
    try:
        if args.keys_command == "create":
            return await _keys_create(args)
        if args.keys_command == "list":
            return await _keys_list(args)
        if args.keys_command == "revoke":
            return await _keys_revoke(args.id_or_prefix)
        return await _keys_ensure_local()
    except DomainError as error:
        print(f"voice-admin: {error.message}", file=sys.stderr)
        return 1


def _add_keys_parser(commands: Any) -> None:
    keys = commands.add_parser("keys", help="API keys (what clients send to the gateway)")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="make an API key (printed once, never stored)")
    create.add_argument("--tenant", required=True, help="the tenant the key acts for")
    create.add_argument("--name", required=True, help="a name people recognise (1-100 characters)")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=key_format.SCOPES,
        help="what the key may do (repeat for several)",
    )
    create.add_argument("--rps", type=float, default=0.0, help="sustained requests per second (0: default)")
    create.add_argument("--burst", type=int, default=0, help="requests at once above the rate (0: default)")
    create.add_argument(
        "--max-streams", type=int, default=0, help="streaming calls open at once (0: default)"
    )
    create.add_argument("--ttl-days", type=float, help="days until the key expires (default: never)")
    listing = key_commands.add_parser("list", help="list API keys")
    listing.add_argument("--tenant", help="one tenant's keys only")
    listing.add_argument("--all", action="store_true", help="revoked and expired keys too")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = key_commands.add_parser("revoke", help="revoke an API key (permanent)")
    revoke.add_argument(
        "id_or_prefix", metavar="ID_OR_PREFIX", help="the key's id, or its prefix (vk_xxxxxxxx)"
    )
    key_commands.add_parser(
        "ensure-local", help="the embedded default's admin key in <data dir>/admin-api-key (for make run)"
    )


class _ProgressBar:
    """One tqdm bar on stderr over the bytes of a download, named after the file arriving."""

    def __init__(self) -> None:
        self._bar: tqdm[Any] | None = None

    def __call__(self, progress: DownloadProgress) -> None:
        if progress.total_bytes <= 0:
            return
        bar = self._bar
        if bar is None:
            bar = self._bar = tqdm(
                total=progress.total_bytes, unit="B", unit_scale=True, unit_divisor=1000, file=sys.stderr
            )
        bar.set_description_str(progress.file or progress.repo_id, refresh=False)
        bar.update(progress.done_bytes - bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _model_to_pull(kind: str, model: str | None) -> tuple[str, str | None, tuple[str, ...] | None, str, str]:
    """(the model as named, its hub id or None for a directory, the files to take, the setting that names it,
    how to do without a download) for the TTS or the ASR service; the default model is the service's own
    (TTS_MODEL, ASR_MODEL)."""
    from voice_common.config import load_settings as load_service_settings

    if kind == "tts":
        from voice_tts.model_manager import HOW_TO_SET_MODEL, HUB_FETCH
        from voice_tts.settings import TtsSettings

        _, tts = load_service_settings(TtsSettings, "TTS_")
        tts_spec = replace(tts.spec(), model=model) if model else tts.spec()
        return tts_spec.model, tts_spec.hub_id(), HUB_FETCH.patterns, "TTS_MODEL", HOW_TO_SET_MODEL
    from voice_asr.engine import HOW_TO_SET_MODEL as ASR_HOW_TO_SET_MODEL
    from voice_asr.engine import HUB_FETCH as ASR_HUB_FETCH
    from voice_asr.settings import AsrSettings

    _, asr = load_service_settings(AsrSettings, "ASR_")
    asr_spec = replace(asr.spec(), model=model) if model else asr.spec()
    return asr_spec.model, asr_spec.hub_id(), ASR_HUB_FETCH.patterns, "ASR_MODEL", ASR_HOW_TO_SET_MODEL


def _models_pull(kind: str, model: str | None, downloader: ModelDownloader) -> int:
    name, hub_id, patterns, setting, how_to_set = _model_to_pull(kind, model)
    if hub_id is None:
        if Path(name).expanduser().is_dir():
            print(f"{setting} {name!r} is a model directory: nothing to download")
            return 0
        print(
            f"voice-admin: {name!r} is neither a hub id (owner/name) nor a model directory: {how_to_set}",
            file=sys.stderr,
        )
        return 1
    bar = _ProgressBar()
    try:
        report = downloader.download(hub_id, patterns=patterns, on_progress=bar)
    except ModelDownloadError as error:
        bar.close()
        print(
            f"voice-admin: model {hub_id!r} was not downloaded: {error}. Run this where there is a network (and "
            f"copy the Hugging Face cache, {downloader.cache_dir}, to this machine), or {how_to_set}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        bar.close()
        print(f"voice-admin: interrupted; run it again to resume {hub_id!r}", file=sys.stderr)
        return 130
    bar.close()
    _print_report(report, setting, name)
    return 0


def _print_report(report: DownloadReport, setting: str, name: str) -> None:
    if report.downloaded:
        fetched = f"{len(report.downloaded)} downloaded ({size_text(report.downloaded_bytes)})"
    else:
        fetched = "all already in the cache"
    print(f"{report.repo_id}: {report.files} files verified, {fetched}; in {report.snapshot}")
    if report.repaired:
        print(f"  downloaded again after finding them corrupted in the cache: {', '.join(report.repaired)}")
    print(f"  the {setting.split('_')[0]} service uses it with {setting}={name}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="voice-admin", description="Operator commands of the voice platform."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply database migrations")
    doctor = commands.add_parser("doctor", help="find rows without objects and objects without rows")
    doctor.add_argument("--delete-orphans", action="store_true", help="delete objects that no row owns")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    commands.add_parser("sweep", help="delete expired data now")
    models = commands.add_parser("models", help="model files in the Hugging Face cache")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    pull = model_commands.add_parser(
        "pull",
        help="download a model (verified, resumable) into the Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub)",
    )
    pull.add_argument("service", nargs="?", choices=("tts", "asr"), default="tts", help="whose model (tts)")
    pull.add_argument(
        "--model",
        help="a hub id, or a size: 0.6B/1.7B for TTS, a faster-whisper name (small, large-v3) for ASR; "
        "default: the service's TTS_MODEL/ASR_MODEL",
    )
    _add_keys_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "migrate":
        code = _migrate()
    elif args.command == "doctor":
        code = asyncio.run(_doctor(args.delete_orphans, args.json))
    elif args.command == "models":
        code = _models(args)
    elif args.command == "keys":
        code = asyncio.run(_keys(args))
    else:
        code = asyncio.run(_sweep())
    sys.exit(code)


def _models(args: argparse.Namespace) -> int:
    # Warnings (a retried file, a corrupted cached one) as text lines with their details, beside the bar.
    configure_logging("voice-admin", "WARNING", "text")
    return _models_pull(args.service, args.model, ModelDownloader())


if __name__ == "__main__":
    main()
