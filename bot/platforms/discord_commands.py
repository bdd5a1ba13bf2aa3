"""Slash commands generated from the command catalogue (:mod:`bot.core.catalogue`).

Each catalogue command becomes an ``app_commands.Command`` whose callback signature is built
from the catalogue's options: ``app_commands.Range`` from the limits table and the config,
choices, model autocomplete, descriptions and required-ness. Discord therefore refuses
exactly what the core would. What a command *does* is one small handler per command in
:data:`HANDLERS`: parse nothing, call the core, render. Core errors become ephemeral messages
through the tree's error handler. Admin groups carry ``default_permissions`` (which only hide
them; the core refuses non-admins).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Optional

import discord
from discord import app_commands

from bot.config import Config
from bot.core import catalogue
from bot.core.catalogue import Access, Kind, Option
from bot.core.limits import NumberLimit, TextLimit
from bot.core.models import MusicRequest
from bot.platforms import render
from bot.platforms.apikey_command import apikey_answer
from bot.platforms.discord_host import DiscordHost, Interaction
from bot.platforms.discord_send import DISCORD

Handler = Callable[[DiscordHost, Interaction, dict[str, Any]], Awaitable[None]]
DISCORD_MAX_INT = 2**53
"""Discord sends integer options as JSON numbers: it cannot carry a maximum above this."""


def build_commands(host: DiscordHost) -> list[app_commands.Command[Any, ..., Any]
                                              | app_commands.Group]:
    """Every catalogue command Discord offers, bound to ``host`` (its config sets ranges)."""
    built: list[app_commands.Command[Any, ..., Any] | app_commands.Group] = [
        _command(host, entry) for entry in catalogue.commands_for("discord")]
    for group in catalogue.GROUPS:
        built.append(_group(host, group))
    return built


def _group(host: DiscordHost, group: catalogue.Group) -> app_commands.Group:
    admin = group.access is Access.ADMIN
    built = app_commands.Group(
        name=group.name, description=group.help, guild_only=admin,
        default_permissions=discord.Permissions(manage_guild=True) if admin else None)
    for entry in catalogue.commands_for("discord", group.name):
        built.add_command(_command(host, entry, built))
    return built


def _command(host: DiscordHost, entry: catalogue.Command,
             parent: app_commands.Group | None = None) -> app_commands.Command[Any, ..., Any]:
    handler = HANDLERS[entry.qualified_name]

    async def callback(interaction: Interaction, **values: Any) -> None:
        await handler(host, interaction, values)

    callback.__signature__ = _signature(host.config, entry)  # type: ignore[attr-defined]
    _decorate(host, entry, callback)
    return app_commands.Command(name=entry.name, description=entry.help, callback=callback,
                                parent=parent)


def _signature(config: Config, entry: catalogue.Command) -> inspect.Signature:
    """``(interaction, *, prompt: Range[str, 1, 400], duration: Range[float, 1, 30], …)``."""
    params = [inspect.Parameter("interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                annotation=Interaction)]
    for option in entry.options:
        kind = annotation(config, option)
        params.append(inspect.Parameter(
            option.name, inspect.Parameter.KEYWORD_ONLY,
            annotation=kind if option.required else Optional[kind],  # noqa: UP045
            default=inspect.Parameter.empty if option.required else None))
    return inspect.Signature(params)


def _decorate(host: DiscordHost, entry: catalogue.Command, callback: Any) -> None:
    """Descriptions, choices and autocomplete, as discord.py's decorators record them."""
    if entry.options:
        app_commands.describe(**{o.name: o.description for o in entry.options})(callback)
    choices = {o.name: [app_commands.Choice(name=c, value=c) for c in o.choices]
               for o in entry.options if o.choices}
    if choices:
        app_commands.choices(**choices)(callback)
    models = {o.name: _model_names(host) for o in entry.options if o.kind is Kind.MODEL}
    if models:
        app_commands.autocomplete(**models)(callback)


def annotation(config: Config, option: Option) -> Any:
    """The type discord.py turns into the option's schema (type, range, length)."""
    if option.kind is Kind.MEMBER:
        return discord.User
    if option.kind is Kind.ATTACHMENT:
        return discord.Attachment
    bound = option.bounds(config)
    if isinstance(bound, TextLimit):
        return app_commands.Range[str, 1, bound.max_chars]
    if isinstance(bound, NumberLimit):
        return option_range(bound)
    return {Kind.NUMBER: float, Kind.INTEGER: int, Kind.JOB: int}.get(option.kind, str)


def option_range(limit: NumberLimit) -> Any:
    """The ``app_commands.Range`` Discord enforces for one row of the limits table."""
    if not limit.integer:
        return app_commands.Range[float, limit.low, limit.high]
    if limit.high > DISCORD_MAX_INT:  # job numbers: the core checks the top
        return app_commands.Range[int, int(limit.low)]
    return app_commands.Range[int, int(limit.low), int(limit.high)]


Complete = Callable[[Interaction, str], Coroutine[Any, Any, list[app_commands.Choice[str]]]]


def _model_names(host: DiscordHost) -> Complete:
    async def complete(interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        # Only loaded models can be requested; offer those when the app has loaded any.
        names = sorted(host.service.available_models or host.config.models.catalogue)
        keys = [k for k in names if current.lower() in k.lower()]
        return [app_commands.Choice(name=k, value=k) for k in keys[:25]]

    return complete


# ------------------------------------------------------------------------- handlers


async def _reply(interaction: Interaction, text: str) -> None:
    """Ephemeral answer after an ephemeral defer (clipped to Discord's 2000 characters)."""
    await interaction.followup.send(clip(text), ephemeral=True)


def clip(text: str, limit: int = 2000) -> str:
    """Cut ``text`` at a line break to fit one message (long histories and ledgers)."""
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit - 2)
    return text[: cut if cut > 0 else limit - 2] + "\n…"


async def _defer(interaction: Interaction) -> None:
    # Deferring first keeps the 3 s deadline even when the database is busy.
    await interaction.response.defer(ephemeral=True, thinking=True)


def _user_id(member: discord.abc.User | None) -> str | None:
    return str(member.id) if member is not None else None


async def _music(host: DiscordHost, interaction: Interaction, values: dict[str, Any]) -> None:
    service = host.service

    async def submit(actor: Any, dest: Any, key: str) -> Any:
        # After the defer: downloading and checking a clip can take longer than 3 s.
        clips = await _attached_clips(host, values)
        return await service.request_music(actor, MusicRequest(**{**values, **clips}), dest,
                                           key)

    await host.start_job(interaction, submit)


async def _attached_clips(host: DiscordHost, values: dict[str, Any]) -> dict[str, str]:
    """Stored clip paths for the ``audio``/``melody`` attachments (size checked first)."""
    from bot.media.download import clip_from_url

    found = {}
    for field in ("audio", "melody"):
        attachment = values.get(field)
        if isinstance(attachment, discord.Attachment):
            clip = await clip_from_url(host.config, field, attachment.url, attachment.size,
                                       values.get("model"))
            found[field] = str(clip.path)
    return found


async def _batch(host: DiscordHost, interaction: Interaction, values: dict[str, Any]) -> None:
    # Discord's slash options are one line: prompts are separated by " | " (newlines work
    # too when a client sends them); the core splits, counts and validates them.
    prompts = values.pop("prompts")
    request, service = MusicRequest(prompt="", **values), host.service
    await host.start_job(interaction, lambda actor, dest, key: service.request_batch(
        actor, prompts, request, dest, key))


async def _balance(host: DiscordHost, interaction: Interaction, values: dict[str, Any]) -> None:
    member = values.get("member")
    await _defer(interaction)
    amount = await host.service.balance(host.actor(interaction), _user_id(member))
    whose = "Your" if member is None else f"{member.mention}'s"
    await _reply(interaction, render.balance_text(amount, whose))


async def _history(host: DiscordHost, interaction: Interaction, values: dict[str, Any]) -> None:
    await _defer(interaction)
    jobs = await host.service.history(host.actor(interaction))
    await _reply(interaction, render.history_text(jobs, DISCORD))


async def _queue(host: DiscordHost, interaction: Interaction, values: dict[str, Any]) -> None:
    await _defer(interaction)
    await _reply(interaction, render.queue_text(await host.service.queue(host.actor(interaction))))


async def _cancel(host: DiscordHost, interaction: Interaction, values: dict[str, Any]) -> None:
    await host.cancel_job(interaction, values.get("job"))


async def _track(host: DiscordHost, interaction: Interaction, values: dict[str, Any]) -> None:
    await host.send_stored_track(interaction, values["job"])


async def _share(host: DiscordHost, interaction: Interaction, values: dict[str, Any]) -> None:
    await _defer(interaction)
    job = await host.service.sharing.share(host.actor(interaction), values["job"])
    await _reply(interaction, render.shared_text(host.config, job, "discord"))


async def _unshare(host: DiscordHost, interaction: Interaction, values: dict[str, Any]) -> None:
    await _defer(interaction)
    job = await host.service.sharing.unshare(host.actor(interaction), values["job"])
    await _reply(interaction, render.unshared_text(job))


async def _stems(host: DiscordHost, interaction: Interaction, values: dict[str, Any]) -> None:
    service, job_id = host.service, values["job"]
    await host.start_job(interaction, lambda actor, dest, key: service.stems(
        actor, job_id, dest, key))


async def _price(host: DiscordHost, interaction: Interaction, values: dict[str, Any]) -> None:
    model = values.get("model") or host.config.models.default
    tokens = host.service.price(values["duration"], model, values.get("format"))
    text = render.price_text(tokens, values["duration"], model)
    await interaction.response.send_message(text, ephemeral=True)


async def _help(host: DiscordHost, interaction: Interaction, values: dict[str, Any]) -> None:
    text = render.help_text(host.config, "discord")
    await interaction.response.send_message(clip(text), ephemeral=True)


def _adjust(action: str) -> Handler:
    async def adjust(host: DiscordHost, interaction: Interaction, values: dict[str, Any]) -> None:
        member = values["member"]
        await _defer(interaction)
        balance = await host.service.adjust_balance(
            host.actor(interaction), action, str(member.id), values["amount"],
            values.get("reason") or "")
        await _reply(interaction, render.balance_text(balance, f"{member.mention}'s new"))

    return adjust


async def _ledger(host: DiscordHost, interaction: Interaction, values: dict[str, Any]) -> None:
    await _defer(interaction)
    entries = await host.service.ledger(host.actor(interaction), _user_id(values.get("member")))
    await _reply(interaction, render.ledger_text(entries, DISCORD))


async def _apikey(host: DiscordHost, interaction: Interaction, values: dict[str, Any]) -> None:
    await _defer(interaction)  # ephemeral: the key is shown to its member only, once
    text = await apikey_answer(host.service.apikeys, host.actor(interaction), values["action"],
                               values.get("label"), values.get("key"),
                               _user_id(values.get("member")))
    await _reply(interaction, text)


HANDLERS: dict[str, Handler] = {
    "apikey": _apikey,
    "music": _music, "batch": _batch, "balance": _balance, "history": _history, "queue": _queue,
    "cancel": _cancel, "track": _track, "price": _price, "help": _help, "stems": _stems,
    "tokens grant": _adjust("grant"), "tokens take": _adjust("take"),
    "tokens set": _adjust("set"), "tokens ledger": _ledger,
    "share": _share,
    "unshare": _unshare,
}
"""What each catalogue command does on Discord (a test checks none is missing)."""
