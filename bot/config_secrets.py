"""Secrets: bot tokens and the signing secret, from the environment or a git-ignored ``.env``.

Read through pydantic-settings, never from the config file, and never shown: :class:`Secret`
masks its ``repr`` and ``str``, so a logged config or exception cannot leak a token.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, field_validator
from pydantic_core import core_schema
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

SECRET_VARIABLES = ("DISCORD_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET")


class Secret(str):
    """A string whose repr and str never reveal the value (keeps tokens out of logs)."""

    def __repr__(self) -> str:
        return "Secret('***')"

    def reveal(self) -> str:
        """The value itself, for the one call that sends it to the platform."""
        return str.__str__(self)

    def __str__(self) -> str:
        return "***"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(cls, core_schema.str_schema())


@dataclass(frozen=True)
class Secrets:
    """Tokens from the environment; each ``None`` when unset."""

    discord_token: Secret | None = None
    slack_bot_token: Secret | None = None
    slack_app_token: Secret | None = None
    slack_signing_secret: Secret | None = None


class _SecretSettings(BaseSettings):
    """The secrets as pydantic-settings reads them: given environment first, then ``.env``."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    discord_token: Secret | None = None
    slack_bot_token: Secret | None = None
    slack_app_token: Secret | None = None
    slack_signing_secret: Secret | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return (value.strip() or None) if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment arrives as init values (load_config's ``environ``, which tests set),
        # so os.environ itself is not read a second time.
        return init_settings, dotenv_settings


def read_secrets(
    environ: Mapping[str, str], dotenv: str | os.PathLike[str] | None = ".env"
) -> Secrets:
    """The four secrets from ``environ``, else from the ``dotenv`` file when it exists."""
    given: dict[str, Any] = {
        name.lower(): environ[name] for name in SECRET_VARIABLES if name in environ}
    # _env_file is a BaseSettings option, not a field; a dict keeps the type checker quiet.
    settings = _SecretSettings(**{"_env_file": dotenv, **given})
    return Secrets(**settings.model_dump())
