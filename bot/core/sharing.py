"""Sharing a finished track on its public page (``/t/<share_id>``).

A track is private until its owner (or an admin of its community) shares it, or until the
community's default in ``api.share_by_default`` / ``api.share_by_default_in`` shares it when it
renders. Sharing gives the job an unguessable id (:func:`new_share_id`, 96 random bits);
unsharing clears it, so the old URL answers 404 and a later share makes a new one: a link
that leaked once is dead for good.
"""

from __future__ import annotations

import secrets

import aiosqlite

from bot.config import ApiConfig, Config
from bot.core import jobs
from bot.core.db import Database
from bot.core.errors import InvalidRequest, JobNotFound, MusicBotError, NotAuthorized
from bot.core.models import Actor, Job, JobState, Track
from bot.core.requests import validate_job_id

SHARE_ID_BYTES = 12
"""Random bytes per share id: 96 bits, 16 URL-safe characters; not guessable, not counted."""


class TrackNotShared(MusicBotError):
    """No shared track has this id (never shared, unshared, or deleted after retention)."""

    code = "track_not_shared"

    def __init__(self) -> None:
        super().__init__("This track is not shared (or no longer stored).")


def new_share_id() -> str:
    """A fresh unguessable share id (URL-safe base64 of :data:`SHARE_ID_BYTES` random bytes)."""
    return secrets.token_urlsafe(SHARE_ID_BYTES)


def shared_by_default(api: ApiConfig, platform: str, community: str) -> bool:
    """Whether new tracks of this community get a page when they render (config decides)."""
    return api.share_by_default_in.get(f"{platform}:{community}", api.share_by_default)


def page_url(config: Config, job: Job) -> str | None:
    """The public page of a shared job under ``api.public_base_url``; None when either is
    missing (no base URL configured, or the track is private)."""
    base = config.api.public_base_url.rstrip("/")
    if not base or not job.share_id:
        return None
    return f"{base}/t/{job.share_id}"


async def share_on_render(conn: aiosqlite.Connection, config: Config, job: Job) -> str | None:
    """Inside the ``rendered`` transaction: give the job a share id when its community shares
    by default. Returns the id set (or the one it already had), else None."""
    if job.share_id:
        return job.share_id
    dest = job.destination
    if not shared_by_default(config.api, dest.platform, dest.community):
        return None
    return await _set_share_id(conn, job.id, new_share_id())


async def _set_share_id(
    conn: aiosqlite.Connection, job_id: int, share_id: str | None
) -> str | None:
    await conn.execute_fetchall("UPDATE jobs SET share_id = ? WHERE id = ?", (share_id, job_id))
    return share_id


class Sharing:
    """The share / unshare use cases and the page's lookup, over one store."""

    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db

    async def share(self, actor: Actor, job_id: object) -> Job:
        """Make a finished track public; returns the job with its ``share_id``.

        Sharing an already shared track keeps its id (the link already posted still works).
        Raises JobNotFound (unknown, or another community's), NotAuthorized (someone else's
        track and the actor is no admin here) or InvalidRequest (not finished).
        """
        return await self._set(actor, job_id, shared=True)

    async def unshare(self, actor: Actor, job_id: object) -> Job:
        """Make a track private again: its page URL answers 404 from now on."""
        return await self._set(actor, job_id, shared=False)

    async def shared_track(self, share_id: str) -> tuple[Job, Track]:
        """The job and stored track behind a page id. Raises TrackNotShared for an unknown,
        unshared or unfinished track (the page shows one 404 for all; the caller fetches the
        files from the track store, which says when they are gone)."""
        if not _plausible(share_id):
            raise TrackNotShared()
        rows = await self.db.fetchall(
            "SELECT j.*, a.platform, a.community, a.user FROM jobs j "
            "JOIN accounts a ON a.id = j.account_id WHERE j.share_id = ?", (share_id,))
        job = jobs.job_from_row(rows[0]) if rows else None
        if job is None or job.track is None or job.state not in (JobState.RENDERED, JobState.DONE):
            raise TrackNotShared()
        return job, job.track

    async def _set(self, actor: Actor, job_id: object, *, shared: bool) -> Job:
        number = validate_job_id(job_id)
        async with self.db.write() as conn:
            job = await jobs.get(conn, number)
            _check_may_share(actor, job, number)
            assert job is not None
            if shared and job.state not in (JobState.RENDERED, JobState.DONE):
                raise InvalidRequest("job", f"#{job.id} is not finished; share it once it is")
            if shared and job.share_id:
                return job
            await _set_share_id(conn, job.id, new_share_id() if shared else None)
            current = await jobs.get(conn, job.id)
        assert current is not None
        return current


def _check_may_share(actor: Actor, job: Job | None, number: int) -> None:
    """Only the owner, or an admin of the job's community; other communities see no job."""
    if job is None or (job.destination.platform, job.destination.community) != (
            actor.platform, actor.community):
        raise JobNotFound(number)
    if job.account.user != actor.user and not actor.is_admin:
        raise NotAuthorized("share or unshare someone else's track")


_SHARE_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _plausible(share_id: str) -> bool:
    """Cheap refusal of ids we never make, before any query (URLs are attacker-chosen)."""
    return 8 <= len(share_id) <= 64 and set(share_id) <= _SHARE_ID_CHARS

