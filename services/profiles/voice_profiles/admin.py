"""``voice-admin``: operator commands for deployments.

voice-admin migrate                  bring the database schema to the current version
voice-admin doctor [--delete-orphans] list rows without objects and objects without rows
voice-admin sweep                    delete expired data and retry failed object deletes now
voice-admin models pull [tts|asr] [--model M]
                                     download a model into the Hugging Face cache, verified (`make models`)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from voice_common.db import redact_url
from voice_common.model_download import (
    DownloadProgress,
    DownloadReport,
    ModelDownloader,
    ModelDownloadError,
    size_text,
)
from voice_common.observability import configure_logging
from voice_profiles.__main__ import load_settings
from voice_profiles.app import ProfilesApp
from voice_profiles.repositories.schema import pending_revisions, upgrade_to_head


def _migrate() -> int:
    common, _ = load_settings()
    url = common.resolved_database_url
    if common.database_url is None:
        common.data_dir.mkdir(parents=True, exist_ok=True)
    before = pending_revisions(url)
    upgrade_to_head(url)
    print(f"{redact_url(url)}: applied {len(before)} migration(s); schema is current")
    return 0


async def _doctor(delete_orphans: bool, as_json: bool) -> int:
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
    args = parser.parse_args(argv)
    if args.command == "migrate":
        code = _migrate()
    elif args.command == "doctor":
        code = asyncio.run(_doctor(args.delete_orphans, args.json))
    elif args.command == "models":
        code = _models(args)
    else:
        code = asyncio.run(_sweep())
    sys.exit(code)


def _models(args: argparse.Namespace) -> int:
    # Warnings (a retried file, a corrupted cached one) as text lines with their details, beside the bar.
    configure_logging("voice-admin", "WARNING", "text")
    return _models_pull(args.service, args.model, ModelDownloader())


if __name__ == "__main__":
    main()
