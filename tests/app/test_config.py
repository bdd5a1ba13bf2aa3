"""Configuration: the example documents every option; mistakes name the key; secrets stay hidden."""

from __future__ import annotations

import ast
import dataclasses
import logging
import typing
from pathlib import Path

import pytest
import yaml

from bot.config import Config, load_config
from bot.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.yaml"


def _keys(cls: type, prefix: str = "") -> set[str]:
    """Every option of the schema, nested sections included (``limits.rate_limit.count``)."""
    keys = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("env_only"):
            continue
        keys.add(prefix + f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            keys |= _keys(hints[f.name], f"{prefix}{f.name}.")
    return keys


def _yaml_keys(data: dict, schema: type = Config, prefix: str = "") -> set[str]:
    """The keys the example sets, descending only where the schema has a section."""
    keys = set()
    hints = typing.get_type_hints(schema)
    for key, value in data.items():
        keys.add(prefix + key)
        section = hints.get(key)
        if isinstance(value, dict) and dataclasses.is_dataclass(section):
            keys |= _yaml_keys(value, section, f"{prefix}{key}.")
    return keys


def test_example_config_loads_and_documents_every_option() -> None:
    config = load_config(EXAMPLE, environ={}, dotenv=None)
    assert config.models.default == "small"
    documented = _yaml_keys(yaml.safe_load(EXAMPLE.read_text()))
    missing = _keys(Config) - documented
    assert not missing, f"options missing from config.example.yaml: {sorted(missing)}"
    assert documented == _keys(Config), "the example sets keys the schema does not know"


def test_the_ledger_cap_the_config_checks_is_the_ledgers() -> None:
    from bot.config import MAX_BALANCE
    from bot.core.ledger import MAX_BALANCE as LEDGER_MAX

    assert MAX_BALANCE == LEDGER_MAX


def test_config_errors_are_caught_as_the_cores_errors(tmp_path: Path) -> None:
    from bot.core.errors import MusicBotError

    path = tmp_path / "config.yaml"
    path.write_text("economy:\n  starting_balance: -1\n")
    with pytest.raises(MusicBotError):
        load_config(path, environ={}, dotenv=None)


@pytest.mark.parametrize("module", ["config.py", "config_rules.py", "config_secrets.py",
                                    "errors.py"])
def test_the_config_imports_nothing_of_the_core(module: str) -> None:
    tree = ast.parse((ROOT / "bot" / module).read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    inward = ("bot.core", "bot.platforms", "bot.app", "generation")
    assert not {m for m in modules if m and m.startswith(inward)}


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("generation:\n  max_batchh: 4\n", "generation.max_batchh", "unknown setting"),
        ("generation:\n  max_batch: four\n", "generation.max_batch", "whole number"),
        ("generation:\n  max_batch: 0\n", "generation.max_batch", "at least 1"),
        ("limits:\n  max_duration_s: .nan\n", "limits.max_duration_s", "number"),
        ("limits:\n  max_duration_s: 301\n", "limits.max_duration_s", "at most 300"),
        ("audio:\n  format: aiff\n", "audio.format", "mp3"),
        ("slack:\n  mode: webhook\n", "slack.mode", "socket or http"),
        ("models:\n  default: huge\n", "models.default", "not in models.catalogue"),
        ("discord_token: abc\n", "discord_token", "environment"),
        ("economy: 5\n", "economy", "mapping"),
        ("limits:\n  blocked_words: spam\n", "limits.blocked_words", "list"),
        ("limits:\n  rate_limit: {count: 0}\n", "limits.rate_limit.count", "at least 1"),
        ("limits:\n  rate_limit: {count: 5, windw_s: 9}\n", "limits.rate_limit.windw_s",
         "known: count, window_s"),
        ("pricing:\n  models: {large: {minmum: 1}}\n", "pricing.models.large.minmum",
         "unknown setting"),
        ("pricing:\n  models: {large: {per_second: -1}}\n", "pricing.models.large.per_second",
         "0 or more"),
        ("discord:\n  owners: [12, null]\n", "discord.owners[1]", "expected text"),
        ("generation:\n  lease_s: '30'\n", "generation.lease_s", "expected a number"),
        ("audio:\n  waveform: 1\n", "audio.waveform", "true or false"),
        ("delivery:\n  retry_delays_s: [2, .inf]\n", "delivery.retry_delays_s[1]", "finite"),
        ("models:\n  preload: [huge]\n", "models.preload", "key of models.catalogue"),
        ("secrets: {discord_token: abc}\n", "secrets", "environment"),
    ],
)
def test_a_wrong_setting_is_refused_naming_its_key(
    tmp_path: Path, text: str, key: str, words: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={}, dotenv=None)
    assert caught.value.key == key
    assert words in caught.value.user_message


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("generation:\n  max_batch: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path, environ={}, dotenv=None)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "nope.yaml", environ={}, dotenv=None)


def test_relative_paths_resolve_next_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "config.yaml"
    path.parent.mkdir()
    path.write_text("database: bot.db\ndata_dir: tracks\n")
    config = load_config(path, environ={}, dotenv=None)
    assert config.database_path == path.parent / "bot.db"
    assert config.data_path == path.parent / "tracks"


def test_secrets_come_from_env_then_dotenv_and_never_show(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("export SLACK_BOT_TOKEN='xoxb-from-dotenv'\nDISCORD_TOKEN=from-dotenv\n")
    config = load_config(None, environ={"DISCORD_TOKEN": "from-env"}, dotenv=dotenv)
    assert config.secrets.discord_token is not None
    assert config.secrets.discord_token.reveal() == "from-env"
    assert config.secrets.slack_bot_token.reveal() == "xoxb-from-dotenv"
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("config %s %r", config, config.secrets.discord_token)
    assert "from-env" not in caplog.text and "xoxb-from-dotenv" not in caplog.text
    assert "from-env" not in repr(config)


def test_model_override_adds_unknown_sources_to_the_catalogue() -> None:
    config = load_config(None, environ={}, dotenv=None)
    assert config.with_model("debug").models.default == "debug"
    assert config.with_model("facebook/musicgen-medium").models.default == "medium"
    local = config.with_model("/models/my-musicgen")
    assert local.models.default == "/models/my-musicgen"
    assert local.model_source("/models/my-musicgen") == "/models/my-musicgen"


def test_ids_written_without_quotes_are_text(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("discord:\n  owners: [123456789012345678]\n  guild_ids: [42]\n")
    config = load_config(path, environ={}, dotenv=None)
    assert config.discord.owners == ["123456789012345678"]
    assert config.discord.guild_ids == ["42"]


def test_a_blank_secret_counts_as_unset(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("SLACK_BOT_TOKEN=\nOTHER_SETTING=1\n")
    config = load_config(None, environ={"DISCORD_TOKEN": "  "}, dotenv=dotenv)
    assert config.secrets.discord_token is None
    assert config.secrets.slack_bot_token is None
