"""``voice-admin``: operator commands for deployments.

voice-admin migrate                  bring the database schema to the current version
voice-admin doctor [--delete-orphans] list rows without objects and objects without rows
voice-admin sweep                    delete expired data and retry failed object deletes now
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from voice_common.db import redact_url
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
        f"generation(s), {report.objects_deleted} pending object(s); {report.objects_still_failing} still failing"
    )
    return 0


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
    args = parser.parse_args(argv)
    if args.command == "migrate":
        code = _migrate()
    elif args.command == "doctor":
        code = asyncio.run(_doctor(args.delete_orphans, args.json))
    else:
        code = asyncio.run(_sweep())
    sys.exit(code)


if __name__ == "__main__":
    main()
