"""Audio prompts on Slack: message shortcuts on a message that carries an audio file.

Slash commands carry no files, so a member uses the message's "⋯ More actions" menu:
*Continue this clip* or *Follow this melody* (callback ids :data:`CONTINUE` and
:data:`MELODY`). The bot opens a modal asking for the prompt, the new seconds and (melody)
the model; on submit it acks at once, downloads ``url_private_download`` with the bot token
(size checked from the file's metadata first and again while streaming), checks and stores
the clip, then queues and charges exactly like ``/music``. Refusals are private messages in
the channel of the shortcut; nothing is charged. The manifest additions are in docs/slack.md.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.core.errors import InvalidRequest
from bot.core.models import MusicRequest
from bot.media.download import clip_from_url

if TYPE_CHECKING:
    from bot.platforms.slack_bot import SlackFrontend

CONTINUE = "musicbot_continue_clip"
MELODY = "musicbot_follow_melody"
MODAL = "musicbot_clip_modal"
FIELDS = {CONTINUE: "audio", MELODY: "melody"}
AUDIO_TYPES = ("mp3", "wav", "ogg", "flac", "m4a", "aac", "opus", "webm", "aiff")

Ack = Callable[..., Awaitable[Any]]


def register(frontend: SlackFrontend) -> None:
    """Add the two shortcuts and the modal's submission handler to the bolt app."""
    app = frontend.app

    async def on_shortcut(ack: Ack, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        await open_modal(frontend, client, body)

    async def on_submit(ack: Ack, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()  # the modal closes now; download and checks can take longer than 3 s
        meta = json.loads(body["view"].get("private_metadata") or "{}")
        place = {"team_id": meta.get("team", ""), "channel_id": meta.get("channel", ""),
                 "user_id": body["user"]["id"], "user_name": body["user"].get("username", "")}
        await frontend._guarded(client, place, submit(frontend, client, body, meta, place))

    app.shortcut(CONTINUE)(on_shortcut)
    app.shortcut(MELODY)(on_shortcut)
    app.view(MODAL)(on_submit)


def audio_file(message: dict[str, Any]) -> dict[str, Any] | None:
    """The first audio file attached to a message, if any."""
    for file in message.get("files") or []:
        kind = str(file.get("filetype", "")).lower()
        if str(file.get("mimetype", "")).startswith("audio/") or kind in AUDIO_TYPES:
            return dict(file)
    return None


async def open_modal(frontend: SlackFrontend, client: AsyncWebClient,
                     body: dict[str, Any]) -> None:
    """The prompt/duration modal for a shortcut, or a private "no audio here" answer."""
    field = FIELDS[body["callback_id"]]
    place = {"team_id": (body.get("team") or {}).get("id", ""),
             "channel_id": (body.get("channel") or {}).get("id", ""),
             "user_id": body["user"]["id"]}
    file = audio_file(body.get("message") or {})
    if file is None:
        await frontend.reply(client, place, "That message has no audio file. Upload an MP3, "
                             "WAV, OGG or FLAC, then use the shortcut on that message.")
        return
    meta = {"field": field, "team": place["team_id"], "channel": place["channel_id"],
            "url": file.get("url_private_download") or file.get("url_private", ""),
            "size": file.get("size"), "name": str(file.get("name", ""))[:80]}
    await client.views_open(trigger_id=body["trigger_id"], view=modal_view(frontend, meta))


def modal_view(frontend: SlackFrontend, meta: dict[str, Any]) -> dict[str, Any]:
    """The modal: prompt, new seconds and, for a melody, the model."""
    melody = meta["field"] == "melody"
    title = "Follow this melody" if melody else "Continue this clip"
    blocks = [
        _input("prompt", "What the music should sound like", multiline=True),
        _input("duration", "Seconds of new music", initial="10"),
    ]
    if melody:
        melodic = [k for k in frontend.config.models.catalogue if "melody" in
                   frontend.config.model_source(k)]
        blocks.append(_input("model", "Model", initial=melodic[0] if melodic else ""))
    return {"type": "modal", "callback_id": MODAL, "title": _text(title),
            "submit": _text("Make music"), "close": _text("Cancel"), "blocks": blocks,
            "private_metadata": json.dumps(meta)}


async def submit(frontend: SlackFrontend, client: AsyncWebClient, body: dict[str, Any],
                 meta: dict[str, Any], place: dict[str, Any]) -> None:
    """Download and check the clip, then charge and queue (see the module docstring)."""
    values = _values(body["view"])
    field = str(meta.get("field", "audio"))
    if field not in ("audio", "melody"):
        raise InvalidRequest("clip", "this form is out of date; use the shortcut again")
    token = client.token or ""
    clip = await clip_from_url(frontend.config, field, str(meta.get("url", "")),
                               _int(meta.get("size")), values.get("model"),
                               headers={"Authorization": f"Bearer {token}"})
    request = MusicRequest(prompt=values.get("prompt", ""), duration=values.get("duration"),
                           model=values.get("model") or None, **{field: str(clip.path)})
    actor = await frontend.actor(client, place)
    key = f"slack:view:{body['view']['id']}"
    receipt = await frontend.service.request_music(actor, request,
                                                   frontend.destination(place), key)
    await frontend.announce(client, place, actor, receipt)


def _values(view: dict[str, Any]) -> dict[str, str]:
    """``{action_id: value}`` of the modal's plain-text inputs."""
    found = {}
    for block in (view.get("state") or {}).get("values", {}).values():
        for action_id, element in block.items():
            found[action_id] = str(element.get("value") or "").strip()
    return found


def _input(action_id: str, label: str, *, initial: str = "",
           multiline: bool = False) -> dict[str, Any]:
    element: dict[str, Any] = {"type": "plain_text_input", "action_id": action_id,
                               "multiline": multiline}
    if initial:
        element["initial_value"] = initial
    return {"type": "input", "block_id": action_id, "label": _text(label), "element": element}


def _text(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
