"""``/apikey create|list|revoke``: the same few lines for every chat frontend.

The answer holds a new key in clear, so every frontend shows it only to the member who asked
(Discord ephemeral, Slack ephemeral, the console's own terminal).
"""

from __future__ import annotations

from bot.core.apikeys import ApiKeys
from bot.core.errors import InvalidRequest
from bot.core.models import Actor
from bot.platforms import render


async def apikey_answer(keys: ApiKeys, actor: Actor, action: object, label: object = "",
                        key: object = None, member: object = None) -> str:
    """Do what ``/apikey`` asks and say what happened (plain text, markdown-safe)."""
    verb = str(action or "").strip().lower()
    if verb == "create":
        return render.apikey_created_text(await keys.create(actor, label or ""))
    if verb == "list":
        return render.apikey_list_text(await keys.list_keys(actor, member))
    if verb == "revoke":
        return render.apikey_revoked_text(await keys.revoke(actor, key, member))
    raise InvalidRequest("action", "use create, list or revoke")
