"""Download a member's attachment with its size bounded, then check and store it as a clip.

The platform's declared size is checked before any byte is fetched, and the running count
again while streaming (a declared size can be missing or wrong), so an oversized upload is
refused without filling the disk. Only ``http(s)`` URLs the platform handed us are fetched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import aiohttp

from bot.config import Config
from bot.core.errors import InvalidRequest
from bot.media.clips import Clip, check_size, intake

CHUNK = 64 * 1024
TIMEOUT_S = 60.0


async def clip_from_url(
    config: Config, field: str, url: str, declared_size: int | None, model: str | None,
    headers: dict[str, str] | None = None,
) -> Clip:
    """Fetch ``url`` (``headers`` e.g. Slack's bot token) and :func:`intake` it.

    Raises:
        InvalidRequest: too big (declared or counted), not fetchable, or not a usable clip.
    """
    check_size(config, field, declared_size)
    temp = await download(config, field, url, headers or {})
    try:
        return await intake(config, field, temp, model)
    finally:
        temp.unlink(missing_ok=True)


async def download(config: Config, field: str, url: str, headers: dict[str, str]) -> Path:
    """The body of ``url`` in a temporary file, at most ``limits.max_clip_bytes`` long."""
    if not url.startswith(("https://", "http://")):
        raise InvalidRequest(field, "the attachment has no download address")
    handle, name = tempfile.mkstemp(suffix=".upload")
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
            async with (aiohttp.ClientSession(timeout=timeout) as session,
                        session.get(url, headers=headers) as response):
                if response.status != 200:
                    raise InvalidRequest(field, f"the file could not be fetched (HTTP "
                                         f"{response.status}); attach it again")
                check_size(config, field, response.content_length)
                received = 0
                async for chunk in response.content.iter_chunked(CHUNK):
                    received += len(chunk)
                    check_size(config, field, received)
                    out.write(chunk)
    except aiohttp.ClientError:
        path.unlink(missing_ok=True)
        raise InvalidRequest(field, "the file could not be fetched; attach it again") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
