"""A fake Slack on 127.0.0.1: the Web API methods musicbot calls, Socket Mode, and the
signed HTTP requests Slack sends to an app's Request URL.

Real slack-bolt and slack_sdk talk to it over real HTTP and websockets, so the tests exercise
the libraries' own request building, retries, signatures and envelope acks. It keeps a small
world (channels with members, users with admin flags, posted messages with their edits,
uploaded files with their bytes) and records every API call so tests can assert on what a
member would see. ``fail(method, error)`` makes the next call(s) to a method fail the way
Slack does (``{"ok": false, "error": …}`` or an HTTP status).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, WSMsgType, web

JsonDict = dict[str, Any]

BOT_TOKEN = "xoxb-fake-bot"
APP_TOKEN = "xapp-fake-app"
SIGNING_SECRET = "fake-signing-secret"
"""Credentials every fake workspace accepts unless told otherwise."""


@dataclass
class Channel:
    id: str
    name: str
    private: bool = False
    bot_member: bool = True


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[JsonDict] | None
    thread_ts: str | None = None
    edits: list[JsonDict] = field(default_factory=list)
    """Every chat.update applied, in order (text and blocks)."""


@dataclass
class SharedFile:
    id: str
    filename: str
    title: str
    channel: str
    thread_ts: str | None
    blocks: list[JsonDict] | None
    data: bytes


@dataclass
class Ack:
    """Slack's view of an app's answer to a request: HTTP status/body or a Socket Mode ack."""

    status: int
    body: Any


@dataclass
class _Failure:
    error: str
    times: int | None
    status: int = 200
    retry_after: int | None = None


class FakeSlack:
    """Start with ``await fake.start()``; ``api_url`` is what AsyncWebClient's base_url takes."""

    def __init__(self, *, bot_token: str = BOT_TOKEN, app_token: str = APP_TOKEN,
                 signing_secret: str = SIGNING_SECRET, team_id: str = "T0FAKE") -> None:
        self.bot_token, self.app_token = bot_token, app_token
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.bot_user_id = "UBOT"
        self.calls: list[tuple[str, JsonDict]] = []
        self.users: dict[str, JsonDict] = {}
        self.channels: dict[str, Channel] = {}
        self.messages: list[Message] = []
        self.ephemerals: list[JsonDict] = []
        self.responses: list[JsonDict] = []
        self.uploads: dict[str, bytes] = {}
        self.pending_files: dict[str, JsonDict] = {}
        self.shared_files: list[SharedFile] = []
        self.views: dict[str, JsonDict] = {}
        self.opened_views: list[JsonDict] = []
        """Modals the app opened with views.open (each with its ``trigger_id`` and ``id``)."""
        self.hosted: dict[str, tuple[str, bytes]] = {}
        """Files members uploaded: id → (name, bytes), served at ``url_private_download``."""
        self.file_downloads: dict[str, int] = {}
        self.request_url: str | None = None
        """Where signed HTTP requests go (the app's Request URL) in HTTP mode."""
        self._failures: dict[str, _Failure] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._acks: dict[str, asyncio.Future[JsonDict]] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_post("/response/{hook}", self._response_url)
        app.router.add_get("/socket", self._socket)
        app.router.add_get("/files/{file_id}/{name}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        for socket in list(self._sockets):
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    # ------------------------------------------------------------------ world set-up

    def add_user(self, user_id: str, name: str, *, admin: bool = False,
                 owner: bool = False) -> None:
        self.users[user_id] = {"id": user_id, "name": name, "team_id": self.team_id,
                               "is_admin": admin, "is_owner": owner, "is_bot": False}

    def add_channel(self, channel_id: str, name: str, *, private: bool = False,
                    bot_member: bool = True) -> Channel:
        channel = Channel(channel_id, name, private, bot_member)
        self.channels[channel_id] = channel
        return channel

    def fail(self, method: str, error: str, *, times: int | None = 1, status: int = 200,
             retry_after: int | None = None) -> None:
        """Make the next ``times`` calls (None: all) to ``method`` fail with ``error``."""
        self._failures[method] = _Failure(error, times, status, retry_after)

    # ------------------------------------------------------------------ assertions

    def calls_to(self, method: str) -> list[JsonDict]:
        return [args for name, args in self.calls if name == method]

    def messages_in(self, channel: str) -> list[Message]:
        return [m for m in self.messages if m.channel == channel]

    def private_texts(self, user: str | None = None) -> list[str]:
        """Everything said privately (response_url posts and chat.postEphemeral), in order."""
        said = [r for r in self.responses] + [e for e in self.ephemerals]
        said.sort(key=lambda item: item["_seq"])
        return [s.get("text", "") for s in said if user is None or s.get("user") in (None, user)]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Poll until ``predicate()`` is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------------ Slack → app

    def slash_command(self, text: str, *, user: str, channel: str,
                      command: str = "/music") -> JsonDict:
        """The fields Slack sends for a slash command (form fields, all strings)."""
        hook = uuid.uuid4().hex
        return {
            "token": "legacy-verification-token", "team_id": self.team_id,
            "team_domain": "fake", "channel_id": channel,
            "channel_name": self.channels[channel].name if channel in self.channels else "dm",
            "user_id": user, "user_name": self.users.get(user, {}).get("name", user),
            "command": command, "text": text, "api_app_id": "A0FAKE",
            "is_enterprise_install": "false",
            "response_url": f"{self.url}/response/{hook}",
            "trigger_id": f"{next(self._ids)}.{uuid.uuid4().hex[:12]}",
        }

    def block_action(self, action_id: str, *, user: str, channel: str,
                     message_ts: str = "1.000001", value: str = "") -> JsonDict:
        """A ``block_actions`` payload for a button click on a message."""
        hook = uuid.uuid4().hex
        return {
            "type": "block_actions",
            "user": {"id": user, "username": self.users.get(user, {}).get("name", user),
                     "team_id": self.team_id},
            "api_app_id": "A0FAKE", "token": "legacy-verification-token",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel,
                          "is_ephemeral": False},
            "trigger_id": f"{next(self._ids)}.{uuid.uuid4().hex[:12]}",
            "team": {"id": self.team_id, "domain": "fake"},
            "channel": {"id": channel, "name": self.channels[channel].name},
            "message": {"type": "message", "ts": message_ts, "text": ""},
            "response_url": f"{self.url}/response/{hook}",
            "actions": [{"type": "button", "action_id": action_id, "block_id": "b",
                         "value": value, "action_ts": f"{time.time():.6f}"}],
        }

    def host_file(self, name: str, data: bytes, *, mimetype: str = "audio/mpeg",
                  size: int | None = None) -> JsonDict:
        """A file a member uploaded, as it appears in a message's ``files`` (``size`` overrides
        the declared size). Downloading it needs the bot token, as on Slack."""
        file_id = f"F{next(self._ids):08d}"
        self.hosted[file_id] = (name, data)
        url = f"{self.url}/files/{file_id}/{name}"
        return {"id": file_id, "name": name, "mimetype": mimetype,
                "filetype": name.rsplit(".", 1)[-1], "size": len(data) if size is None else size,
                "url_private": url, "url_private_download": url}

    def message_shortcut(self, callback_id: str, *, user: str, channel: str,
                         files: list[JsonDict] | None = None) -> JsonDict:
        """A ``message_action`` payload: a member picked a shortcut on a message."""
        return {
            "type": "message_action", "callback_id": callback_id, "token": "legacy",
            "trigger_id": f"{next(self._ids)}.{uuid.uuid4().hex[:12]}",
            "action_ts": f"{time.time():.6f}",
            "team": {"id": self.team_id, "domain": "fake"},
            "user": {"id": user, "username": self.users.get(user, {}).get("name", user),
                     "team_id": self.team_id},
            "channel": {"id": channel, "name": self.channels[channel].name},
            "message": {"type": "message", "ts": "1.000001", "user": user, "text": "my riff",
                        "files": files or []},
            "response_url": f"{self.url}/response/{uuid.uuid4().hex}",
        }

    def view_submission(self, view: JsonDict, *, user: str, values: dict[str, str]) -> JsonDict:
        """A ``view_submission`` payload: the member filled ``view``'s inputs and submitted."""
        state = {block: {block: {"type": "plain_text_input", "value": value}}
                 for block, value in values.items()}
        return {
            "type": "view_submission", "token": "legacy",
            "team": {"id": self.team_id, "domain": "fake"},
            "user": {"id": user, "username": self.users.get(user, {}).get("name", user),
                     "team_id": self.team_id},
            "view": {**view, "state": {"values": state}},
            "api_app_id": "A0FAKE",
        }

    def home_opened(self, user: str) -> JsonDict:
        """An ``event_callback`` wrapping ``app_home_opened``."""
        return {
            "token": "legacy-verification-token", "team_id": self.team_id,
            "api_app_id": "A0FAKE", "type": "event_callback",
            "event_id": f"Ev{next(self._ids)}", "event_time": int(time.time()),
            "event": {"type": "app_home_opened", "user": user, "channel": "D0HOME",
                      "tab": "home", "event_ts": f"{time.time():.6f}"},
        }

    async def send_socket(self, kind: str, payload: JsonDict, timeout: float = 10.0) -> Ack:
        """Send an envelope over the app's websocket; returns the app's ack."""
        await self.wait_for(lambda: self._sockets, timeout)
        envelope_id = str(uuid.uuid4())
        future: asyncio.Future[JsonDict] = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = future
        await self._sockets[-1].send_json({
            "envelope_id": envelope_id, "type": kind, "payload": payload,
            "accepts_response_payload": kind != "events_api", "retry_attempt": 0,
            "retry_reason": "",
        })
        ack = await asyncio.wait_for(future, timeout)
        return Ack(200, ack.get("payload"))

    async def send_http(self, kind: str, payload: JsonDict, *, timestamp: int | None = None,
                        secret: str | None = None) -> Ack:
        """POST a request signed like Slack does (``v0=HMAC(secret, v0:ts:body)``)."""
        assert self.request_url, "set fake.request_url to the app's Request URL first"
        if kind == "slash_commands":
            body, ctype = urllib.parse.urlencode(payload), "application/x-www-form-urlencoded"
        elif kind == "interactive":
            body = urllib.parse.urlencode({"payload": json.dumps(payload)})
            ctype = "application/x-www-form-urlencoded"
        else:
            body, ctype = json.dumps(payload), "application/json"
        ts = str(int(time.time()) if timestamp is None else timestamp)
        key = (secret or self.signing_secret).encode()
        digest = hmac.new(key, f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
        headers = {"Content-Type": ctype, "X-Slack-Request-Timestamp": ts,
                   "X-Slack-Signature": f"v0={digest}"}
        async with ClientSession() as session, session.post(
            self.request_url, data=body.encode(), headers=headers
        ) as resp:
            return Ack(resp.status, await resp.text())

    async def send(self, mode: str, kind: str, payload: JsonDict) -> Ack:
        """Deliver like Slack would for an app in ``mode`` (``socket`` or ``http``)."""
        if mode == "socket":
            return await self.send_socket(kind, payload)
        return await self.send_http(kind, payload)

    # ------------------------------------------------------------------ app → Slack

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await _request_args(request)
        self.calls.append((method, args))
        token = args.pop("_token", "")
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != expected:
            return _error("invalid_auth" if token else "not_authed")
        failure = self._take_failure(method)
        if failure is not None:
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after else None
            return web.json_response({"ok": False, "error": failure.error},
                                     status=failure.status, headers=headers)
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return _error("unknown_method")
        return web.json_response(handler(args))

    def _take_failure(self, method: str) -> _Failure | None:
        failure = self._failures.get(method)
        if failure is None:
            return None
        if failure.times is not None:
            failure.times -= 1
            if failure.times <= 0:
                del self._failures[method]
        return failure

    def _m_auth_test(self, args: JsonDict) -> JsonDict:
        return {"ok": True, "url": "https://fake.slack.com/", "team": "Fake",
                "user": "musicbot", "team_id": self.team_id, "user_id": self.bot_user_id,
                "bot_id": "B0FAKE", "is_enterprise_install": False}

    def _m_apps_connections_open(self, args: JsonDict) -> JsonDict:
        return {"ok": True, "url": self.url.replace("http", "ws", 1) + "/socket"}

    def _m_users_info(self, args: JsonDict) -> JsonDict:
        user = self.users.get(args.get("user", ""))
        return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}

    def _m_conversations_join(self, args: JsonDict) -> JsonDict:
        channel = self.channels.get(args.get("channel", ""))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if channel.private:
            return {"ok": False, "error": "method_not_supported_for_channel_type"}
        channel.bot_member = True
        return {"ok": True, "channel": {"id": channel.id, "name": channel.name}}

    def _membership_error(self, channel_id: str) -> JsonDict | None:
        channel = self.channels.get(channel_id)
        if channel_id.startswith("D") and channel is None:
            return None  # the app's own DM
        if channel is None or (channel.private and not channel.bot_member):
            return {"ok": False, "error": "channel_not_found"}
        if not channel.bot_member:
            return {"ok": False, "error": "not_in_channel"}
        return None

    def _m_chat_postMessage(self, args: JsonDict) -> JsonDict:
        channel = args.get("channel", "")
        if (error := self._membership_error(channel)) is not None:
            return error
        ts = f"{int(time.time())}.{next(self._ids):06d}"
        self.messages.append(Message(channel, ts, args.get("text", ""),
                                     _json(args.get("blocks")), args.get("thread_ts")))
        return {"ok": True, "channel": channel, "ts": ts,
                "message": {"text": args.get("text", ""), "ts": ts}}

    def _m_chat_update(self, args: JsonDict) -> JsonDict:
        for message in self.messages:
            if message.channel == args.get("channel") and message.ts == args.get("ts"):
                message.text = args.get("text", message.text)
                message.blocks = _json(args.get("blocks")) or message.blocks
                message.edits.append({"text": message.text, "blocks": message.blocks})
                return {"ok": True, "channel": message.channel, "ts": message.ts}
        return {"ok": False, "error": "message_not_found"}

    def _m_chat_postEphemeral(self, args: JsonDict) -> JsonDict:
        if (error := self._membership_error(args.get("channel", ""))) is not None:
            return error
        self.ephemerals.append({**args, "_seq": next(self._ids)})
        return {"ok": True, "message_ts": f"{time.time():.6f}"}

    def _m_views_publish(self, args: JsonDict) -> JsonDict:
        view = _json(args.get("view"))
        self.views[args.get("user_id", "")] = view
        return {"ok": True, "view": {"id": "V0FAKE", **view}}

    def _m_views_open(self, args: JsonDict) -> JsonDict:
        if not args.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        view = {**_json(args.get("view")), "id": f"V{next(self._ids):06d}",
                "trigger_id": args["trigger_id"]}
        self.opened_views.append(view)
        return {"ok": True, "view": view}

    async def _file(self, request: web.Request) -> web.Response:
        """``url_private_download``: the bytes, only with the bot token (as Slack)."""
        file_id = request.match_info["file_id"]
        hosted = self.hosted.get(file_id)
        if request.headers.get("Authorization") != f"Bearer {self.bot_token}":
            return web.Response(status=403, text="login required")
        if hosted is None or hosted[0] != request.match_info["name"]:
            return web.Response(status=404)
        self.file_downloads[file_id] = self.file_downloads.get(file_id, 0) + 1
        return web.Response(body=hosted[1], content_type="application/octet-stream")

    def _m_files_getUploadURLExternal(self, args: JsonDict) -> JsonDict:
        if not args.get("filename") or not str(args.get("length", "")).isdigit():
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{next(self._ids):08d}"
        self.pending_files[file_id] = {"filename": args["filename"],
                                       "length": int(args["length"])}
        return {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        data = await request.read()
        self.calls.append(("upload", {"file_id": file_id, "size": len(data)}))
        expected = self.pending_files.get(file_id, {}).get("length")
        if expected != len(data):
            return web.Response(status=400, text="length mismatch")
        self.uploads[file_id] = data
        return web.Response(text=f"OK - {len(data)}")

    def _m_files_completeUploadExternal(self, args: JsonDict) -> JsonDict:
        channel = args.get("channel_id", "")
        if channel and (error := self._membership_error(channel)) is not None:
            return error
        files = _json(args.get("files")) or []
        if not files or any(f["id"] not in self.uploads for f in files):
            return {"ok": False, "error": "file_not_found"}
        for f in files:
            self.shared_files.append(SharedFile(
                f["id"], self.pending_files[f["id"]]["filename"], f.get("title", ""), channel,
                args.get("thread_ts"), _json(args.get("blocks")), self.uploads[f["id"]]))
        return {"ok": True, "files": [{"id": f["id"], "title": f.get("title", "")}
                                      for f in files]}

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.responses.append({**body, "_hook": request.match_info["hook"],
                               "_seq": next(self._ids)})
        return web.Response(text="ok")

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        await socket.send_json({"type": "hello", "num_connections": 1,
                                "connection_info": {"app_id": "A0FAKE"},
                                "debug_info": {"host": "fake"}})
        self._sockets.append(socket)
        try:
            async for message in socket:
                if message.type != WSMsgType.TEXT:
                    continue
                ack = json.loads(message.data)
                future = self._acks.pop(ack.get("envelope_id", ""), None)
                if future is not None and not future.done():
                    future.set_result(ack)
        finally:
            self._sockets.remove(socket)
        return socket


async def _request_args(request: web.Request) -> JsonDict:
    """Merge query, form and JSON arguments like Slack does; the token goes to ``_token``."""
    args: JsonDict = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            args.update(await request.json())
        else:
            args.update(dict(await request.post()))
    auth = request.headers.get("Authorization", "")
    args["_token"] = auth.removeprefix("Bearer ").strip() or args.pop("token", "")
    return args


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) and value else value


def _error(error: str) -> web.Response:
    return web.json_response({"ok": False, "error": error})
