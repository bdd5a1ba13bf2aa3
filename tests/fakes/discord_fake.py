"""A fake Discord (REST API + gateway) on 127.0.0.1 that the real discord.py talks to.

It answers what a bot using application commands needs: login (``/users/@me``,
``/applications/@me``), command sync, the gateway handshake (HELLO → IDENTIFY → READY →
GUILD_CREATE, heartbeats), interaction callbacks, webhook follow-ups and edits, channel and
DM messages. Tests drive it like members would: :meth:`FakeDiscord.slash` and
:meth:`FakeDiscord.click` dispatch ``INTERACTION_CREATE`` and every message the bot creates or
edits is recorded as a :class:`FakeMessage` (multipart uploads parsed into :class:`Upload`).

Options of a slash command are typed from the schema the bot synced, so a test fails when
the bot did not register the option it is given, as Discord would refuse it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yarl
from aiohttp import WSMsgType, web

DISCORD_EPOCH_MS = 1420070400000
MANAGE_GUILD = 1 << 5
MEMBER_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 31)  # view channel, send, use app commands
EPHEMERAL = 1 << 6
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


@dataclass
class Upload:
    """One file of a multipart request."""

    filename: str
    content_type: str
    data: bytes


@dataclass
class Call:
    """One REST request the bot made."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    uploads: list[Upload]
    authorization: str | None


@dataclass
class FakeFile:
    """A file a member attaches to a slash command option; the fake serves it on 127.0.0.1.

    ``declared_size`` overrides the size Discord reports (None: the real length).
    """

    filename: str
    data: bytes
    content_type: str = "audio/mpeg"
    declared_size: int | None = None
    downloads: int = 0
    """How many times the bot fetched it (a too-big file must not be fetched at all)."""


@dataclass
class FakeUser:
    id: int
    name: str
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        return {"id": str(self.id), "username": self.name, "discriminator": "0",
                "global_name": self.name, "avatar": None, "bot": self.bot}


@dataclass
class FakeGuild:
    id: int
    name: str
    channel_id: int
    owner_id: int
    roles: dict[str, int] = field(default_factory=dict)
    """Role name → role id (the @everyone role has the guild's id)."""
    members: dict[int, tuple[int, list[str]]] = field(default_factory=dict)
    """User id → (permission bits, role names)."""


@dataclass
class FakeMessage:
    """A message as members would see it; ``history`` keeps every content it had."""

    id: int
    channel_id: int
    content: str
    flags: int
    components: list[dict[str, Any]]
    uploads: list[Upload]
    source: str
    """How it was made: ``callback``, ``followup``, ``channel`` or ``dm``."""
    interaction_id: int | None = None
    history: list[str] = field(default_factory=list)
    deleted: bool = False
    loading: bool = False
    allowed_mentions: dict[str, Any] | None = None
    """The ``allowed_mentions`` the bot sent with the latest version (None: not sent, so
    Discord would parse every mention in the text)."""

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for row in self.components
                for c in row.get("components", []) if "custom_id" in c]

    def notified(self) -> set[str]:
        """Who Discord would notify for this message: user ids, ``role:<id>``, ``everyone``.

        Discord's rules: mentions in the text notify only as ``allowed_mentions`` permits;
        without it every user, role and @everyone/@here mention in the text notifies.
        """
        allowed = self.allowed_mentions
        parse = {"users", "roles", "everyone"} if allowed is None else set(allowed.get("parse", []))
        users = set(re.findall(r"<@!?(\d+)>", self.content))
        roles = set(re.findall(r"<@&(\d+)>", self.content))
        out = set(users) if "users" in parse else users & {
            str(u) for u in (allowed or {}).get("users", [])}
        out |= {f"role:{r}" for r in roles if "roles" in parse or r in {
            str(x) for x in (allowed or {}).get("roles", [])}}
        if "everyone" in parse and re.search(r"@(everyone|here)\b", self.content):
            out.add("everyone")
        return out

    def upload(self, suffix: str) -> Upload:
        """The attachment whose file name ends with ``suffix``."""
        matches = [u for u in self.uploads if u.filename.endswith(suffix)]
        assert matches, f"no attachment ending in {suffix!r}: {[u.filename for u in self.uploads]}"
        return matches[0]


@dataclass
class FakeInteraction:
    """An interaction the fake dispatched; its messages are looked up in the fake."""

    id: int
    token: str
    channel_id: int
    fake: FakeDiscord
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    expired: bool = False
    payload: dict[str, Any] = field(default_factory=dict)
    """The INTERACTION_CREATE data as dispatched (for :meth:`FakeDiscord.redeliver`)."""

    def messages(self) -> list[FakeMessage]:
        return [m for m in self.fake.messages.values() if m.interaction_id == self.id]

    async def wait_message(
        self, predicate: Callable[[FakeMessage], bool] = lambda m: True, timeout: float = 60.0
    ) -> FakeMessage:
        """First visible (not loading, not deleted) message of this interaction matching."""

        def find() -> FakeMessage | None:
            for m in self.messages():
                if not m.deleted and not m.loading and predicate(m):
                    return m
            return None

        return await self.fake.wait_for(find, timeout)

    async def wait_callback(self, timeout: float = 60.0) -> dict[str, Any]:
        return await self.fake.wait_for(lambda: self.callbacks[0] if self.callbacks else None,
                                        timeout)


class FakeDiscord:
    """The fake API server. ``await start()``, ``install(monkeypatch)``, then run the bot."""

    valid_token = "fake-discord-token"
    """The only bot token ``/users/@me`` accepts."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.bot = FakeUser(self.snowflake(), "musicbot", bot=True)
        self.application_id = self.bot.id
        self.owner = FakeUser(self.snowflake(), "app-owner")
        self.guilds: dict[int, FakeGuild] = {}
        self.users: dict[int, FakeUser] = {}
        self.calls: list[Call] = []
        self.messages: dict[int, FakeMessage] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        """Synced command schemas: guild id (None = global) → commands."""
        self.interactions: dict[int, FakeInteraction] = {}
        self.files: dict[int, FakeFile] = {}
        """Attachments served at ``/attachments/<id>/<filename>`` (Discord's CDN)."""
        self.identify_count = 0
        self.failures: list[tuple[str, re.Pattern[str], int, dict[str, str]]] = []
        self._ws: web.WebSocketResponse | None = None
        self._seq = 0
        self._changed = asyncio.Condition()
        self._ready = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---------------------------------------------------------------- set-up
    def snowflake(self) -> int:
        return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | next(self._ids)

    def add_user(self, name: str) -> FakeUser:
        user = FakeUser(self.snowflake(), name)
        self.users[user.id] = user
        return user

    def add_guild(self, name: str, owner: FakeUser, roles: tuple[str, ...] = ()) -> FakeGuild:
        gid = self.snowflake()
        guild = FakeGuild(gid, name, self.snowflake(), owner.id, {"@everyone": gid})
        for role in roles:
            guild.roles[role] = self.snowflake()
        self.guilds[gid] = guild
        self.add_member(guild, owner, permissions=MEMBER_PERMISSIONS | MANAGE_GUILD)
        return guild

    def add_member(
        self, guild: FakeGuild, user: FakeUser, permissions: int = MEMBER_PERMISSIONS,
        roles: tuple[str, ...] = (),
    ) -> None:
        guild.members[user.id] = (permissions, list(roles))

    def fail_next(self, method: str, path_pattern: str, status: int,
                  headers: dict[str, str] | None = None) -> None:
        """Answer the next matching request with ``status`` (e.g. 429 or 500)."""
        self.failures.append((method, re.compile(path_pattern), status, headers or {}))

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        app.router.add_get("/attachments/{id}/{name}", self._attachment)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def install(self, monkeypatch: Any) -> None:
        """Point discord.py's REST base and gateway URL at this server."""
        import discord.gateway
        import discord.http

        base = f"http://127.0.0.1:{self.port}"
        monkeypatch.setattr(discord.http.Route, "BASE", f"{base}/api/v10")
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY",
                            yarl.URL(f"ws://127.0.0.1:{self.port}/gateway"))

    # ---------------------------------------------------------------- waiting
    async def wait_for(self, find: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Wait until ``find()`` returns something truthy (re-checked on every change)."""
        async with self._changed:
            result = await asyncio.wait_for(self._changed.wait_for(find), timeout)
        return result

    async def wait_ready(self, timeout: float = 60.0) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def wait_identified(self, count: int, timeout: float = 60.0) -> None:
        """Wait until the bot identified ``count`` times in all and got its guilds."""
        await self.wait_for(lambda: self.identify_count >= count and self._ready.is_set(),
                            timeout)

    async def wait_message(self, predicate: Callable[[FakeMessage], bool],
                           timeout: float = 60.0) -> FakeMessage:
        def find() -> FakeMessage | None:
            return next((m for m in self.messages.values()
                         if not m.deleted and not m.loading and predicate(m)), None)

        return await self.wait_for(find, timeout)

    async def _changed_now(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ---------------------------------------------------------------- gateway
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        self._ready.clear()
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}})
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if data["op"] == 1:
                await ws.send_json({"op": 11})
            elif data["op"] == 2:
                await self._identify(ws)
            elif data["op"] == 6:
                await self._send(ws, "RESUMED", {})
        if self._ws is ws:
            self._ws = None
        return ws

    async def _identify(self, ws: web.WebSocketResponse) -> None:
        self.identify_count += 1
        url = f"ws://127.0.0.1:{self.port}/gateway"
        await self._send(ws, "READY", {
            "v": 10, "user": self.bot.payload(), "session_id": secrets.token_hex(8),
            "resume_gateway_url": url, "application": {"id": str(self.application_id),
                                                      "flags": 0},
            "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
        })
        for guild in self.guilds.values():
            await self._send(ws, "GUILD_CREATE", self._guild_payload(guild))
        self._ready.set()
        await self._changed_now()

    async def _send(self, ws: web.WebSocketResponse, event: str, data: Any) -> None:
        self._seq += 1
        await ws.send_json({"op": 0, "t": event, "s": self._seq, "d": data})

    def _guild_payload(self, guild: FakeGuild) -> dict[str, Any]:
        roles = [{"id": str(rid), "name": name, "permissions": "0", "position": i, "color": 0,
                  "hoist": False, "managed": False, "mentionable": False, "flags": 0}
                 for i, (name, rid) in enumerate(guild.roles.items())]
        return {
            "id": str(guild.id), "name": guild.name, "owner_id": str(guild.owner_id),
            "unavailable": False, "member_count": len(guild.members) + 1, "large": False,
            "roles": roles, "channels": [self._channel_payload(guild)], "members": [],
            "emojis": [], "stickers": [], "features": [], "voice_states": [],
            "presences": [], "threads": [], "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0,
            "mfa_level": 0, "premium_tier": 0, "preferred_locale": "en-US",
            "joined_at": "2024-01-01T00:00:00+00:00",
        }

    def _channel_payload(self, guild: FakeGuild) -> dict[str, Any]:
        return {"id": str(guild.channel_id), "type": 0, "name": "general",
                "guild_id": str(guild.id), "position": 0, "permission_overwrites": [],
                "nsfw": False, "parent_id": None, "topic": None, "rate_limit_per_user": 0,
                "flags": 0}

    async def dispatch(self, event: str, data: Any) -> None:
        await self.wait_ready()
        assert self._ws is not None, "the bot is not connected to the gateway"
        await self._send(self._ws, event, data)

    # ---------------------------------------------------------------- interactions
    def _context(self, user: FakeUser, guild: FakeGuild | None) -> dict[str, Any]:
        if guild is None:
            dm_id = self._dm_channel_id(user)
            return {"user": user.payload(), "context": 1,
                    "channel_id": str(dm_id),
                    "channel": {"id": str(dm_id), "type": 1, "recipients": [user.payload()]}}
        permissions, role_names = guild.members[user.id]
        member = {"user": user.payload(), "roles": [str(guild.roles[r]) for r in role_names],
                  "permissions": str(permissions), "flags": 0, "nick": None,
                  "joined_at": "2024-01-01T00:00:00+00:00", "deaf": False, "mute": False}
        return {"guild_id": str(guild.id), "member": member, "context": 0,
                "channel_id": str(guild.channel_id), "channel": self._channel_payload(guild),
                "guild_locale": "en-US"}

    def _dm_channel_id(self, user: FakeUser) -> int:
        # A stable DM channel id per user (Discord keeps one DM channel per pair).
        return user.id + 1

    async def _interact(self, kind: int, data: dict[str, Any], user: FakeUser,
                        guild: FakeGuild | None, upload_limit: int,
                        message: FakeMessage | None = None) -> FakeInteraction:
        channel_id = guild.channel_id if guild else self._dm_channel_id(user)
        interaction = FakeInteraction(self.snowflake(), secrets.token_urlsafe(24), channel_id,
                                      self)
        self.interactions[interaction.id] = interaction
        payload: dict[str, Any] = {
            "id": str(interaction.id), "application_id": str(self.application_id),
            "type": kind, "token": interaction.token, "version": 1, "data": data,
            "locale": "en-US", "app_permissions": str(MEMBER_PERMISSIONS),
            "attachment_size_limit": upload_limit, "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id) if guild else "0"},
            **self._context(user, guild),
        }
        if message is not None:
            payload["message"] = self._message_payload(message)
        interaction.payload = payload
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    async def redeliver(self, interaction: FakeInteraction) -> None:
        """Send the same INTERACTION_CREATE again, as Discord does after a gateway resume."""
        await self.dispatch("INTERACTION_CREATE", interaction.payload)

    async def slash(
        self, command: str, options: dict[str, Any] | None = None, *, user: FakeUser,
        guild: FakeGuild | None = None, upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        focused: str | None = None,
    ) -> FakeInteraction:
        """Run ``/command [sub] options`` as ``user`` (``command`` may be ``"tokens grant"``).

        With ``focused`` the interaction is an autocomplete request for that option.
        """
        name, _, sub = command.partition(" ")
        scope, schema = self._find_command(name, guild)
        data: dict[str, Any] = {"id": schema["id"], "name": name, "type": 1}
        if scope is not None:
            data["guild_id"] = str(scope)
        params = schema.get("options", [])
        opts_out: list[dict[str, Any]]
        if sub:
            subschema = next((o for o in params if o["name"] == sub), None)
            assert subschema is not None, f"/{name} has no subcommand {sub!r}"
            inner = self._options(subschema.get("options", []), options or {}, data, focused)
            opts_out = [{"name": sub, "type": 1, "options": inner}]
        else:
            opts_out = self._options(params, options or {}, data, focused)
        data["options"] = opts_out
        kind = 4 if focused else 2
        return await self._interact(kind, data, user, guild, upload_limit)

    def _find_command(self, name: str, guild: FakeGuild | None) -> tuple[int | None, dict]:
        scopes: list[int | None] = ([guild.id] if guild else []) + [None]
        for scope in scopes:
            for cmd in self.commands.get(scope, []):
                if cmd["name"] == name:
                    return scope, cmd
        raise AssertionError(f"/{name} was not synced (synced: {self.commands})")

    def _options(self, schema: list[dict[str, Any]], given: dict[str, Any],
                 data: dict[str, Any], focused: str | None) -> list[dict[str, Any]]:
        by_name = {o["name"]: o for o in schema}
        missing = [o["name"] for o in schema if o.get("required") and o["name"] not in given]
        assert focused or not missing, f"required options missing: {missing}"
        out = []
        for name, value in given.items():
            assert name in by_name, f"option {name!r} not registered (have {list(by_name)})"
            kind = by_name[name]["type"]
            choices = [c["value"] for c in by_name[name].get("choices", [])]
            assert not choices or value in choices, f"{value!r} is not a choice of {name}"
            option: dict[str, Any] = {"name": name, "type": kind}
            if isinstance(value, FakeUser):
                option["value"] = str(value.id)
                resolved = data.setdefault("resolved", {})
                resolved.setdefault("users", {})[str(value.id)] = value.payload()
                member = self._resolved_member(value)
                if member is not None:
                    resolved.setdefault("members", {})[str(value.id)] = member
            elif isinstance(value, FakeFile):
                option["value"] = self._attach(value, data)
            else:
                option["value"] = value
            if name == focused:
                option["focused"] = True
            out.append(option)
        return out

    def _attach(self, file: FakeFile, data: dict[str, Any]) -> str:
        """Register ``file`` as an uploaded attachment; its id goes in the option value."""
        attachment_id = self.snowflake()
        self.files[attachment_id] = file
        url = f"http://127.0.0.1:{self.port}/attachments/{attachment_id}/{file.filename}"
        size = len(file.data) if file.declared_size is None else file.declared_size
        data.setdefault("resolved", {}).setdefault("attachments", {})[str(attachment_id)] = {
            "id": str(attachment_id), "filename": file.filename, "size": size, "url": url,
            "proxy_url": url, "content_type": file.content_type}
        return str(attachment_id)

    async def _attachment(self, request: web.Request) -> web.StreamResponse:
        file = self.files.get(int(request.match_info["id"]))
        if file is None or file.filename != request.match_info["name"]:
            return web.Response(status=404)
        file.downloads += 1
        return web.Response(body=file.data, content_type=file.content_type)

    def _resolved_member(self, user: FakeUser) -> dict[str, Any] | None:
        for guild in self.guilds.values():
            if user.id in guild.members:
                permissions, role_names = guild.members[user.id]
                return {"roles": [str(guild.roles[r]) for r in role_names],
                        "permissions": str(permissions), "flags": 0, "nick": None,
                        "joined_at": "2024-01-01T00:00:00+00:00"}
        return None

    async def click(self, message: FakeMessage, custom_id: str, *, user: FakeUser,
                    guild: FakeGuild | None = None,
                    upload_limit: int = DEFAULT_UPLOAD_LIMIT) -> FakeInteraction:
        """Press the button ``custom_id`` of ``message`` as ``user``."""
        assert custom_id in message.custom_ids, f"{custom_id!r} not in {message.custom_ids}"
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(3, data, user, guild, upload_limit, message)

    # ---------------------------------------------------------------- REST
    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body, uploads = await self._read_body(request)
        call = Call(request.method, path, dict(request.query), body, uploads,
                    request.headers.get("Authorization"))
        self.calls.append(call)
        for i, (method, pattern, status, headers) in enumerate(self.failures):
            if method == request.method and pattern.search(path):
                del self.failures[i]
                await self._changed_now()
                return self._json({"message": "injected failure", "code": 0,
                                   "retry_after": 0.01, "global": False}, status, headers)
        try:
            result = await self._route(call)
        finally:
            await self._changed_now()
        return result

    async def _read_body(self, request: web.Request) -> tuple[Any, list[Upload]]:
        if request.content_type.startswith("multipart/"):
            body: Any = None
            uploads = []
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    body = json.loads(await part.text())
                else:
                    uploads.append(Upload(part.filename or "", part.headers.get(
                        "Content-Type", ""), bytes(await part.read())))
            return body, uploads
        raw = await request.read()
        return (json.loads(raw) if raw else None), []

    def _json(self, data: Any, status: int = 200,
              headers: dict[str, str] | None = None) -> web.Response:
        # discord.py only decodes bodies whose content-type is exactly application/json.
        # aiohttp adds "; charset=utf-8" to text bodies, so send bytes.
        return web.Response(status=status, body=json.dumps(data).encode(),
                            content_type="application/json", headers=headers)

    async def _route(self, call: Call) -> web.Response:
        routes: list[tuple[str, str, Callable[..., Any]]] = [
            ("GET", r"/users/@me", self._me),
            ("GET", r"/oauth2/applications/@me", self._app_info),
            ("GET", r"/gateway(/bot)?", self._gateway_info),
            ("PUT", r"/applications/(\d+)(?:/guilds/(\d+))?/commands", self._sync),
            ("POST", r"/interactions/(\d+)/([^/]+)/callback", self._callback),
            ("POST", r"/webhooks/(\d+)/([^/]+)", self._followup),
            ("PATCH", r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)", self._edit_hook),
            ("DELETE", r"/webhooks/(\d+)/([^/]+)/messages/(@original|\d+)", self._delete_hook),
            ("POST", r"/users/@me/channels", self._open_dm),
            ("POST", r"/channels/(\d+)/messages", self._channel_post),
            ("PATCH", r"/channels/(\d+)/messages/(\d+)", self._channel_edit),
        ]
        for method, pattern, handler in routes:
            match = re.fullmatch(pattern, call.path)
            if method == call.method and match:
                return await handler(call, *match.groups())
        return self._json({"message": "404: Not Found", "code": 0}, 404)

    async def _me(self, call: Call) -> web.Response:
        if call.authorization != "Bot " + self.valid_token:
            return self._json({"message": "401: Unauthorized", "code": 0}, 401)
        return self._json(self.bot.payload())

    async def _app_info(self, call: Call) -> web.Response:
        return self._json({
            "id": str(self.application_id), "name": "musicbot", "description": "",
            "icon": None, "bot_public": True, "bot_require_code_grant": False,
            "owner": self.owner.payload(), "verify_key": "00", "flags": 0, "team": None,
            "summary": "", "rpc_origins": [],
        })

    async def _gateway_info(self, call: Call, _bot: str | None) -> web.Response:
        return self._json({"url": f"ws://127.0.0.1:{self.port}/gateway", "shards": 1,
                           "session_start_limit": {"total": 1000, "remaining": 999,
                                                   "reset_after": 0, "max_concurrency": 1}})

    async def _sync(self, call: Call, app_id: str, guild_id: str | None) -> web.Response:
        scope = int(guild_id) if guild_id else None
        synced = []
        for cmd in call.body:
            saved = {**cmd, "id": str(self.snowflake()), "application_id": app_id,
                     "version": str(self.snowflake()), "type": cmd.get("type", 1)}
            saved.setdefault("description", "")
            if scope is not None:
                saved["guild_id"] = guild_id
            synced.append(saved)
        self.commands[scope] = synced
        return self._json(synced)

    def expire(self, interaction: FakeInteraction) -> None:
        """The interaction's token stops working, as it does 15 minutes after the command."""
        interaction.expired = True

    def _interaction_by_token(self, token: str) -> FakeInteraction | None:
        found = next((i for i in self.interactions.values() if i.token == token), None)
        return None if found is None or found.expired else found

    def _unknown_webhook(self) -> web.Response:
        return self._json({"message": "Unknown Webhook", "code": 10015}, 404)

    def _new_message(self, channel_id: int, body: dict[str, Any] | None,
                     uploads: list[Upload], source: str,
                     interaction: FakeInteraction | None = None) -> FakeMessage:
        body = body or {}
        msg = FakeMessage(self.snowflake(), channel_id, body.get("content") or "",
                          body.get("flags", 0) or 0, body.get("components") or [], uploads,
                          source, interaction.id if interaction else None)
        msg.allowed_mentions = body.get("allowed_mentions")
        msg.history.append(msg.content)
        self.messages[msg.id] = msg
        return msg

    async def _callback(self, call: Call, interaction_id: str, token: str) -> web.Response:
        interaction = self.interactions.get(int(interaction_id))
        if interaction is None or interaction.token != token:
            return self._json({"message": "Unknown interaction", "code": 10062}, 404)
        if interaction.callbacks:
            return self._json({"message": "Interaction has already been acknowledged.",
                               "code": 40060}, 400)
        interaction.callbacks.append(call.body)
        kind = call.body["type"]
        data = call.body.get("data") or {}
        result: dict[str, Any] = {"interaction": {"id": interaction_id, "type": 2}}
        if kind in (4, 5):  # a message now, or a "thinking…" message edited later
            msg = self._new_message(interaction.channel_id, data, call.uploads, "callback",
                                    interaction)
            msg.loading = kind == 5
            result["interaction"].update(response_message_id=str(msg.id),
                                         response_message_loading=msg.loading,
                                         response_message_ephemeral=msg.ephemeral)
            result["resource"] = {"type": kind, "message": self._message_payload(msg)}
        elif kind == 7:  # update the message the component is on
            result["resource"] = {"type": kind}
        return self._json(result)

    def _original(self, interaction: FakeInteraction) -> FakeMessage | None:
        return next((m for m in self.messages.values()
                     if m.interaction_id == interaction.id and m.source == "callback"), None)

    async def _followup(self, call: Call, app_id: str, token: str) -> web.Response:
        interaction = self._interaction_by_token(token)
        if interaction is None:
            return self._unknown_webhook()
        msg = self._new_message(interaction.channel_id, call.body, call.uploads, "followup",
                                interaction)
        return self._json(self._message_payload(msg))

    async def _edit_hook(self, call: Call, app_id: str, token: str,
                         message_id: str) -> web.Response:
        msg = self._hook_message(token, message_id)
        if isinstance(msg, web.Response):
            return msg
        self._apply_edit(msg, call)
        return self._json(self._message_payload(msg))

    async def _delete_hook(self, call: Call, app_id: str, token: str,
                           message_id: str) -> web.Response:
        msg = self._hook_message(token, message_id)
        if isinstance(msg, web.Response):
            return msg
        msg.deleted = True
        return web.Response(status=204)

    def _hook_message(self, token: str, message_id: str) -> FakeMessage | web.Response:
        """The message a webhook edit/delete names, or the error Discord would answer."""
        interaction = self._interaction_by_token(token)
        if interaction is None:
            return self._unknown_webhook()
        msg = (self._original(interaction) if message_id == "@original"
               else self.messages.get(int(message_id)))
        if msg is None:
            return self._json({"message": "Unknown Message", "code": 10008}, 404)
        return msg

    def _apply_edit(self, msg: FakeMessage, call: Call) -> None:
        body = call.body or {}
        if "content" in body:
            msg.content = body["content"] or ""
            msg.history.append(msg.content)
            msg.allowed_mentions = body.get("allowed_mentions")
        if "components" in body:
            msg.components = body["components"] or []
        if call.uploads:
            msg.uploads = call.uploads
        msg.loading = False

    async def _open_dm(self, call: Call) -> web.Response:
        user = self.users[int(call.body["recipient_id"])]
        return self._json({"id": str(self._dm_channel_id(user)), "type": 1,
                           "recipients": [user.payload()], "last_message_id": None})

    async def _channel_post(self, call: Call, channel_id: str) -> web.Response:
        known = {g.channel_id for g in self.guilds.values()}
        known |= {self._dm_channel_id(u) for u in self.users.values()}
        if int(channel_id) not in known:
            return self._json({"message": "Unknown Channel", "code": 10003}, 404)
        dms = {self._dm_channel_id(u) for u in self.users.values()}
        source = "dm" if int(channel_id) in dms else "channel"
        msg = self._new_message(int(channel_id), call.body, call.uploads, source)
        return self._json(self._message_payload(msg))

    async def _channel_edit(self, call: Call, channel_id: str, message_id: str) -> web.Response:
        msg = self.messages.get(int(message_id))
        if msg is None or msg.deleted or msg.ephemeral:
            return self._json({"message": "Unknown Message", "code": 10008}, 404)
        self._apply_edit(msg, call)
        return self._json(self._message_payload(msg))

    def _message_payload(self, msg: FakeMessage) -> dict[str, Any]:
        return {
            "id": str(msg.id), "channel_id": str(msg.channel_id), "type": 0,
            "content": msg.content, "author": self.bot.payload(), "flags": msg.flags,
            "components": msg.components, "embeds": [], "mentions": [], "mention_roles": [],
            "pinned": False, "tts": False, "timestamp": "2024-01-01T00:00:00+00:00",
            "edited_timestamp": None, "mention_everyone": False,
            "application_id": str(self.application_id),
            "attachments": [{"id": str(i + 1), "filename": u.filename, "size": len(u.data),
                             "url": f"http://127.0.0.1/{u.filename}",
                             "proxy_url": f"http://127.0.0.1/{u.filename}",
                             "content_type": u.content_type}
                            for i, u in enumerate(msg.uploads)],
        }
