"""docs/settings.md is what the settings classes say, and every setting is explained."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tools import settings_reference
from tools.settings_reference import SettingsGroup, UndescribedSetting, render_group


def test_the_committed_page_matches_the_settings_classes() -> None:
    # A stale page is a failure with the way out in the message (run `make settings-docs`).
    assert settings_reference.main(["--check"]) == 0


def test_every_setting_of_every_service_has_a_row() -> None:
    page = settings_reference.PAGE.read_text()
    for group in settings_reference.settings_groups():
        for name in group.settings.model_fields:
            assert f"| `{group.prefix}{name.upper()}` |" in page


class _Example(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EXAMPLE_")

    port: int = Field(50052, ge=0, le=65535, description="gRPC port | the one clients dial.")
    ratio: float = Field(0.5, gt=0, description="A share.")
    name: str | None = Field(None, description="Unset means none.")
    flag: bool = Field(True, description="On or off.")


def test_a_row_shows_default_bounds_and_meaning() -> None:
    text = render_group(SettingsGroup("Example", "EXAMPLE_", _Example, "example.py"))
    assert (
        "| `EXAMPLE_PORT` | `50052` | integer, ≥ 0, ≤ 65535 | gRPC port \\| the one clients dial. |" in text
    )
    assert "| `EXAMPLE_RATIO` | `0.5` | number, > 0 | A share. |" in text
    assert "| `EXAMPLE_NAME` | unset | text | Unset means none. |" in text
    assert "| `EXAMPLE_FLAG` | `true` | `true` or `false` | On or off. |" in text


class _Undescribed(BaseSettings):
    secret_knob: int = 3


def test_a_setting_without_a_description_is_refused() -> None:
    try:
        render_group(SettingsGroup("Bad", "BAD_", _Undescribed, "bad.py"))
    except UndescribedSetting as error:
        assert "_Undescribed.secret_knob has no description" in str(error)
    else:
        raise AssertionError("an undescribed setting was rendered")
