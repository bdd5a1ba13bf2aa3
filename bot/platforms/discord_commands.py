"""Slash commands: ``/music``, ``/balance``, ``/history``, ``/queue``, ``/cancel``, ``/track``,
``/price``, ``/help`` and the admin group ``/tokens``.

Each command's annotations are its option schema: ranges and choices generated from the
core's limits table (:mod:`bot.core.limits`) and the config, plus model autocomplete, so
Discord refuses exactly what the core would. Handlers parse, call the core and render; a
core error becomes an ephemeral message through the tree's error handler. No ``from
__future__ import annotations`` here: discord.py reads these annotations at runtime,
including ranges built from the config.
"""

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.core import limits as table
from bot.core.limits import NumberLimit
from bot.core.models import MusicRequest
from bot.platforms import render
from bot.platforms.discord_send import DISCORD

if TYPE_CHECKING:
    from bot.platforms.discord_bot import DiscordFrontend

Interaction = discord.Interaction[Any]
MAX_TOKENS = int(table.AMOUNT.high)


def option_range(limit: NumberLimit) -> Any:
    """The ``app_commands.Range`` Discord enforces for one row of the limits table."""
    kind = int if limit.integer else float
    low, high = (int(limit.low), int(limit.high)) if limit.integer else (limit.low, limit.high)
    return app_commands.Range[kind, low, high]  # type: ignore[valid-type]


def build_commands(frontend: "DiscordFrontend") -> list[app_commands.Command | app_commands.Group]:
    """All commands, bound to ``frontend`` (its config sets option ranges)."""
    return [*_member_commands(frontend), _tokens_group(frontend)]


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


def _member_commands(frontend: "DiscordFrontend") -> list[app_commands.Command]:
    config, service = frontend.config, frontend.service
    shortest, longest = table.duration_range(config)
    Duration = app_commands.Range[float, shortest, longest]
    Prompt = app_commands.Range[str, 1, table.prompt_chars(config)]
    Seed, Temperature, TopK, TopP, Cfg, Tempo = (option_range(n) for n in table.MUSIC_NUMBERS)
    Genre = app_commands.Range[str, 1, table.GENRE.max_chars]
    format_choices = [app_commands.Choice(name=f, value=f) for f in table.FORMAT_CHOICES]
    JobId = app_commands.Range[int, int(table.JOB.low)]  # above 2**53 Discord cannot send

    async def model_names(interaction: Interaction, current: str) -> list[app_commands.Choice]:
        # Only loaded models can be requested; offer those when the app has loaded any.
        names = sorted(service.available_models or config.models.catalogue)
        keys = [k for k in names if current.lower() in k.lower()]
        return [app_commands.Choice(name=k, value=k) for k in keys[:25]]

    @app_commands.command(name="music", description="Make an original track from a text prompt")
    @app_commands.describe(
        prompt="What the music should sound like", duration="Length in seconds",
        model="Model to use (default from the server config)", seed="Same seed, similar track",
        temperature="Randomness of sampling (default 1.0)", top_k="Sample from the k likeliest",
        top_p="Nucleus sampling (0 = off)", cfg="How closely to follow the prompt (default 3)",
        genre="Genre folded into the prompt", tempo="Beats per minute",
        format="File format (default mp3)")
    @app_commands.choices(format=format_choices)
    @app_commands.autocomplete(model=model_names)
    async def music(
        interaction: Interaction, prompt: Prompt, duration: Duration, model: str | None = None,
        seed: Seed | None = None, temperature: Temperature | None = None,
        top_k: TopK | None = None, top_p: TopP | None = None, cfg: Cfg | None = None,
        genre: Genre | None = None, tempo: Tempo | None = None, format: str | None = None,
    ) -> None:
        request = MusicRequest(prompt=prompt, duration=duration, model=model, seed=seed,
                               temperature=temperature, top_k=top_k, top_p=top_p, cfg=cfg,
                               genre=genre, tempo=tempo, format=format)
        await frontend.start_job(interaction, lambda actor, dest, key: service.request_music(
            actor, request, dest, key))

    @app_commands.command(name="balance", description="Show your tokens (or a member's)")
    @app_commands.describe(member="Whose balance to show (default: yours)")
    async def balance(interaction: Interaction, member: discord.User | None = None) -> None:
        await _defer(interaction)
        amount = await service.balance(frontend.actor(interaction),
                                       str(member.id) if member else None)
        whose = "Your" if member is None else f"{member.mention}'s"
        await _reply(interaction, render.balance_text(amount, whose))

    @app_commands.command(name="history", description="Your recent tracks")
    async def history(interaction: Interaction) -> None:
        await _defer(interaction)
        jobs = await service.history(frontend.actor(interaction))
        await _reply(interaction, render.history_text(jobs, DISCORD))

    @app_commands.command(name="queue", description="What is waiting to be generated")
    async def queue(interaction: Interaction) -> None:
        await _defer(interaction)
        info = await service.queue(frontend.actor(interaction))
        await _reply(interaction, render.queue_text(info))

    @app_commands.command(name="cancel", description="Stop a queued or running job (refunded)")
    @app_commands.describe(job="Job number (default: your newest active job)")
    async def cancel(interaction: Interaction, job: JobId | None = None) -> None:
        await frontend.cancel_job(interaction, job)

    @app_commands.command(name="track", description="Send a finished track again")
    @app_commands.describe(job="Job number (see /history)")
    async def track(interaction: Interaction, job: JobId) -> None:
        await frontend.send_stored_track(interaction, job)

    @app_commands.command(name="price", description="What a track would cost")
    @app_commands.describe(duration="Length in seconds", model="Model (default from config)")
    @app_commands.autocomplete(model=model_names)
    async def price(interaction: Interaction, duration: Duration, model: str | None = None) -> None:
        tokens = service.price(duration, model)
        key = model or config.models.default
        await interaction.response.send_message(render.price_text(tokens, duration, key),
                                                ephemeral=True)

    @app_commands.command(name="help", description="How to use the music bot")
    async def help_(interaction: Interaction) -> None:
        await interaction.response.send_message(render.help_text(config), ephemeral=True)

    return [music, balance, history, queue, cancel, track, price, help_]


def _tokens_group(frontend: "DiscordFrontend") -> app_commands.Group:
    """Admin commands. The core refuses non-admins; default_permissions only hides them."""
    service = frontend.service
    group = app_commands.Group(
        name="tokens", description="Manage members' tokens (admins)", guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True))
    Amount = option_range(table.AMOUNT)
    Reason = app_commands.Range[str, 1, table.REASON.max_chars]

    async def adjust(interaction: Interaction, member: discord.User, action: str,
                     amount: int, reason: str | None) -> None:
        await _defer(interaction)
        admin = frontend.actor(interaction)
        balance = await service.adjust_balance(admin, action, str(member.id), amount,
                                               reason or "")
        await _reply(interaction, render.balance_text(balance, f"{member.mention}'s new"))

    @group.command(name="grant", description="Give a member tokens")
    @app_commands.describe(member="Who gets them", amount="How many", reason="Shown in the ledger")
    async def grant(interaction: Interaction, member: discord.User, amount: Amount,
                    reason: Reason | None = None) -> None:
        await adjust(interaction, member, "grant", amount, reason)

    @group.command(name="take", description="Take tokens from a member")
    @app_commands.describe(member="From whom", amount="How many", reason="Shown in the ledger")
    async def take(interaction: Interaction, member: discord.User, amount: Amount,
                   reason: Reason | None = None) -> None:
        await adjust(interaction, member, "take", amount, reason)

    @group.command(name="set", description="Set a member's balance")
    @app_commands.describe(member="Whose balance", amount="New balance", reason="For the ledger")
    async def set_(interaction: Interaction, member: discord.User,
                   amount: option_range(table.BALANCE),  # type: ignore[valid-type]
                   reason: Reason | None = None) -> None:
        await adjust(interaction, member, "set", amount, reason)

    @group.command(name="ledger", description="Recent balance changes")
    @app_commands.describe(member="Only this member (default: everyone here)")
    async def ledger(interaction: Interaction, member: discord.User | None = None) -> None:
        await _defer(interaction)
        entries = await service.ledger(frontend.actor(interaction),
                                       str(member.id) if member else None)
        await _reply(interaction, render.ledger_text(entries, DISCORD))

    return group
