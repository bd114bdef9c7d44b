"""The settings reference (docs/settings.md), written from the settings classes themselves so it cannot drift.

``python -m tools.settings_reference`` (``make settings-docs``) rewrites the page; ``--check`` exits 1 when the
committed page differs from what the classes say (the test suite runs that check). Every field must carry a
``description``: a setting nobody explained is a failure here, not a blank cell.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

PAGE = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


@dataclass(frozen=True)
class SettingsGroup:
    title: str
    prefix: str
    settings: type[BaseSettings]
    source: str  # repository path of the class, for the reader who wants the code


def settings_groups() -> list[SettingsGroup]:
    # Imported here: importing a service's settings pulls in its package, which the --help path does not need.
    from voice_asr.settings import AsrSettings
    from voice_common.config import CommonSettings
    from voice_gateway.settings import GatewaySettings
    from voice_profiles.settings import ProfilesSettings
    from voice_tts.settings import TtsSettings

    return [
        SettingsGroup(
            "Shared by every service", "VOICE_", CommonSettings, "services/common/voice_common/config.py"
        ),
        SettingsGroup(
            "Profile service", "PROFILES_", ProfilesSettings, "services/profiles/voice_profiles/settings.py"
        ),
        SettingsGroup("TTS service", "TTS_", TtsSettings, "services/tts/voice_tts/settings.py"),
        SettingsGroup("ASR service", "ASR_", AsrSettings, "services/asr/voice_asr/settings.py"),
        SettingsGroup("Gateway", "GATEWAY_", GatewaySettings, "gateway/voice_gateway/settings.py"),
    ]


INTRODUCTION = """\
# Settings reference

Every setting is an environment variable, read once when a service starts and validated then: a wrong value stops
the service with a line that names the variable and what it expected. Nothing reads the environment anywhere else.

This page is generated from the settings classes' own descriptions (`make settings-docs`); the test suite fails when
it no longer matches them, so edit the class, not this page.
"""


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def format_default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "computed at start (see meaning)"
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, int | float):
        return f"`{_format_number(value)}`"
    text = str(value)
    return f"`{text}`" if text else "empty"


def _type_words(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{choice}`" for choice in get_args(annotation))
    if origin in (Union, UnionType):
        kinds = [_type_words(arg) for arg in get_args(annotation) if arg is not type(None)]
        return " or ".join(kinds)
    names = {bool: "`true` or `false`", int: "integer", float: "number", str: "text", Path: "path"}
    if annotation is SecretStr:
        return "text (secret)"
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def format_allowed(field: FieldInfo) -> str:
    words = _type_words(field.annotation)
    bounds = []
    for constraint in field.metadata:
        for kind, attribute, sign in (
            (annotated_types.Ge, "ge", "≥"),
            (annotated_types.Gt, "gt", ">"),
            (annotated_types.Le, "le", "≤"),
            (annotated_types.Lt, "lt", "<"),
        ):
            if isinstance(constraint, kind):
                bounds.append(f"{sign} {_format_number(getattr(constraint, attribute))}")
    return ", ".join([words, *bounds])


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


class UndescribedSetting(Exception):
    pass


def render_group(group: SettingsGroup) -> str:
    lines = [
        f"## {group.title} (`{group.prefix}`)",
        "",
        f"Class `{group.settings.__name__}` in [{group.source}](../{group.source}).",
        "",
        "| variable | default | allowed | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for name, field in group.settings.model_fields.items():
        if not field.description:
            raise UndescribedSetting(
                f"{group.settings.__name__}.{name} has no description: give its Field a description= "
                "that says what the value means"
            )
        variable = group.prefix + name.upper()
        lines.append(
            f"| `{variable}` | {format_default(field)} | {_cell(format_allowed(field))} | "
            f"{_cell(field.description)} |"
        )
    return "\n".join(lines) + "\n"


def render_page(groups: list[SettingsGroup]) -> str:
    return "\n".join([INTRODUCTION, *(render_group(group) for group in groups)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale, write nothing")
    args = parser.parse_args(argv)
    try:
        page = render_page(settings_groups())
    except UndescribedSetting as error:
        print(f"settings reference: {error}", file=sys.stderr)
        return 1
    if args.check:
        current = PAGE.read_text() if PAGE.exists() else ""
        if current != page:
            print(
                f"{PAGE.relative_to(Path.cwd()) if PAGE.is_relative_to(Path.cwd()) else PAGE} is stale: "
                "run `make settings-docs` and commit it",
                file=sys.stderr,
            )
            return 1
        return 0
    PAGE.write_text(page)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
