"""The ``/v1`` JSON API (generate, tracks, balance, admin).

Routes parse and render only; every decision is the core's (:class:`MusicService`). A key
reaches only its own member's tracks: anything else is 404, exactly like an unknown id.
"""

# No ``from __future__ import annotations``: the generate route's body model is built per
# config at run time, and FastAPI must see the real class, not a string naming a local.

import asyncio
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from fastapi.responses import FileResponse

from bot.config import Config
from bot.core import jobs
from bot.core.errors import InvalidRequest, JobNotFound
from bot.core.models import Destination, GenerationParams, Job, JobState, MusicRequest, Receipt
from bot.core.requests import validate_duration, validate_model, validate_request
from bot.core.sharing import page_url
from bot.core.takes import validate_takes
from bot.platforms.web.auth import Caller, caller
from bot.platforms.web.context import WebContext, web_context
from bot.platforms.web.errors import ApiError
from bot.platforms.web.schemas import (
    Accepted,
    Adjust,
    Adjusted,
    Balance,
    ErrorBody,
    ExtendRequest,
    Ledger,
    LedgerLine,
    PriceQuote,
    Sampling,
    Status,
    TakeRef,
    TrackObject,
    TrackPage,
    generate_request_model,
)
from bot.platforms.web.webhooks import check_url

PLATFORM = "api"
"""Destination platform of jobs made through the API (the API frontend delivers them)."""
STATUS: dict[JobState, Status] = {JobState.QUEUED: "pending", JobState.RUNNING: "processing",
          JobState.RENDERED: "completed", JobState.DONE: "completed",
          JobState.FAILED: "failed", JobState.CANCELLED: "cancelled"}
MAX_IDEMPOTENCY_KEY = 100
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in {
        401: "Missing, unknown or revoked key", 402: "Not enough tokens (balance and price "
        "in the body)", 403: "Not an admin", 404: "Unknown track (or not yours)",
        409: "Idempotency-Key reused with another body, or nothing to cancel",
        422: "A field is out of its limits (named in the body)",
        429: "Rate limited (Retry-After)", 503: "Model loading (Retry-After)"}.items()}

Ctx = Annotated[WebContext, Depends(web_context)]
Me = Annotated[Caller, Depends(caller)]
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", description=(
    "Retrying a POST with the same key returns the first job and charges once"))]


def build_router(config: Config) -> APIRouter:
    """The ``/v1`` routes; the generate body's bounds come from ``config``."""
    router = APIRouter(prefix="/v1", responses=ERRORS)
    generate_model = generate_request_model(config)

    @router.post("/music/generate", status_code=202, response_model=Accepted,
                 summary="Queue a track (charged now, refunded if it fails)")
    async def generate(request: Request, context: Ctx, me: Me,
                       body: Annotated[generate_model, Body()],  # type: ignore[valid-type]
                       idempotency_key: IdemKey = None) -> Accepted:
        _require_ready(context)
        values = body.model_dump()  # type: ignore[attr-defined]
        webhook = values.pop("webhook_url")
        music = MusicRequest(format=values.pop("output_format"), **values)
        destination = await _destination(me, webhook, context.config)
        key = _idempotency(me, "generate", idempotency_key)
        receipt = await context.service.request_music(me.actor, music, destination, key)
        if receipt.duplicate and not (  # (the core validated `music`: it passes again here)
                _same_request(receipt.job, validate_request(context.config, music), webhook)
                and len(receipt.group or (receipt.job,)) == validate_takes(
                    context.config, music.takes)):
            raise _conflict()
        return _accepted(request, context, receipt)

    @router.get("/music/{track_id}", response_model=TrackObject, summary="A track's state")
    async def get_track(request: Request, context: Ctx, me: Me, track_id: int) -> TrackObject:
        job = await _my_job(context, me, track_id)
        return await track_object(_base(request, context), context, job)

    @router.get("/music", response_model=TrackPage, summary="My tracks, newest first")
    async def list_tracks(
        request: Request, context: Ctx, me: Me,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[int | None, Query(ge=1, description="next_cursor of the last page")]
        = None,
    ) -> TrackPage:
        where = "WHERE a.platform = ? AND a.community = ? AND a.user = ?"
        params: list[object] = [me.account.platform, me.account.community, me.account.user]
        if cursor is not None:
            where += " AND j.id < ?"
            params.append(cursor)
        rows = await context.service.db.fetchall(
            f"{_SELECT} {where} "
            "ORDER BY j.id DESC LIMIT ?", [*params, limit + 1])
        found = [jobs.job_from_row(r) for r in rows]
        page = found[:limit]
        items = [await track_object(_base(request, context), context, job) for job in page]
        return TrackPage(items=items,
                         next_cursor=page[-1].id if len(found) > limit and page else None)

    @router.get("/music/{track_id}/audio", response_class=FileResponse,
                summary="The audio, inline (Range supported)")
    async def audio(context: Ctx, me: Me, track_id: int) -> FileResponse:
        path, fmt = await _track_file(context, me, track_id)
        return FileResponse(path, media_type=_MEDIA.get(fmt, "application/octet-stream"),
                            content_disposition_type="inline", filename=path.name)

    @router.get("/music/{track_id}/download", response_class=FileResponse,
                summary="The audio as an attachment (Range supported)")
    async def download(context: Ctx, me: Me, track_id: int) -> FileResponse:
        path, fmt = await _track_file(context, me, track_id)
        return FileResponse(path, media_type=_MEDIA.get(fmt, "application/octet-stream"),
                            filename=f"musicbot-{track_id}.{fmt}")

    @router.get("/music/{track_id}/waveform", summary="Waveform peaks (JSON) for players")
    async def waveform(context: Ctx, me: Me, track_id: int) -> FileResponse:
        job = await _finished(context, me, track_id)
        picture = job.track.waveform_data_path if job.track else None
        return FileResponse(_existing(picture, "waveform data"), media_type="application/json")

    @router.get("/music/{track_id}/waveform.png", response_class=FileResponse,
                summary="Waveform picture")
    async def waveform_png(context: Ctx, me: Me, track_id: int) -> FileResponse:
        job = await _finished(context, me, track_id)
        picture = job.track.waveform_path if job.track else None
        return FileResponse(_existing(picture, "waveform picture"), media_type="image/png")

    @router.post("/music/{track_id}/cancel", response_model=TrackObject,
                 summary="Cancel a pending or processing track (refunded)")
    async def cancel(request: Request, context: Ctx, me: Me, track_id: int) -> TrackObject:
        await _my_job(context, me, track_id)
        await context.service.cancel(me.actor, track_id)
        job = await context.service.get_job(track_id)
        return await track_object(_base(request, context), context, job)

    @router.post("/music/{track_id}/reroll", status_code=202, response_model=Accepted,
                 summary="Same request, new seed (charged again)")
    async def reroll(request: Request, context: Ctx, me: Me, track_id: int,
                     idempotency_key: IdemKey = None) -> Accepted:
        _require_ready(context)
        await _my_job(context, me, track_id)
        key = _idempotency(me, f"reroll:{track_id}", idempotency_key)
        destination = await _destination(me, None, context.config)
        receipt = await context.service.reroll(me.actor, track_id, destination, key)
        return _accepted(request, context, receipt)

    @router.post("/music/{track_id}/extend", status_code=202, response_model=Accepted,
                 summary="Continue a finished track (charged as new audio)")
    async def extend(request: Request, context: Ctx, me: Me, track_id: int,
                     body: ExtendRequest | None = None,
                     idempotency_key: IdemKey = None) -> Accepted:
        _require_ready(context)
        await _my_job(context, me, track_id)
        body = body or ExtendRequest(seconds=None, webhook_url=None)
        seconds = body.seconds or context.config.limits.extend_seconds
        key = _idempotency(me, f"extend:{track_id}", idempotency_key)
        destination = await _destination(me, body.webhook_url, context.config)
        receipt = await context.service.extend(me.actor, track_id, seconds, destination, key)
        if receipt.duplicate and receipt.job.params.duration != round(float(seconds), 1):
            raise _conflict()
        return _accepted(request, context, receipt)

    @router.post("/music/{track_id}/stems", status_code=202, response_model=Accepted,
                 summary="Split a finished track into drums, bass, other and vocals (charged)")
    async def stems(request: Request, context: Ctx, me: Me, track_id: int,
                    idempotency_key: IdemKey = None) -> Accepted:
        _require_ready(context)
        await _my_job(context, me, track_id)
        key = _idempotency(me, f"stems:{track_id}", idempotency_key)
        destination = await _destination(me, None, context.config)
        receipt = await context.service.stems(me.actor, track_id, destination, key)
        return _accepted(request, context, receipt)

    @router.get("/music/{track_id}/stems/{stem}", response_class=FileResponse,
                summary="One stem of a stems job (drums, bass, other, vocals)")
    async def stem_file(context: Ctx, me: Me, track_id: int, stem: str) -> FileResponse:
        job = await _finished(context, me, track_id)
        path = (job.track.stems or {}).get(stem) if job.track else None
        if path is None:
            raise JobNotFound(track_id)
        fmt = Path(path).suffix.lstrip(".")
        return FileResponse(_existing(path, f"{stem} stem"),
                            media_type=_MEDIA.get(fmt, "application/octet-stream"),
                            filename=f"musicbot-{track_id}-{stem}.{fmt}")

    @router.get("/balance", response_model=Balance, summary="My tokens")
    async def balance(context: Ctx, me: Me) -> Balance:
        tokens = await context.service.balance(me.actor)
        return Balance(balance=tokens, user=me.actor.user, community=me.actor.community)

    @router.get("/price", response_model=PriceQuote, summary="What a track would cost")
    async def price(
        context: Ctx, me: Me, duration: Annotated[float, Query()],
        model: str | None = None, output_format: str | None = None,
    ) -> PriceQuote:
        key = validate_model(context.config, model)
        cost = context.service.price(duration, key, output_format)
        fmt = output_format or context.config.audio.format
        tokens = await context.service.balance(me.actor)
        return PriceQuote(price=cost, duration=validate_duration(context.config, duration, key),
                          model=key, output_format=fmt.strip().lower(), balance=tokens)

    for action in ("grant", "take", "set"):
        router.add_api_route(
            f"/admin/{action}", _adjust_route(action), methods=["POST"],
            response_model=Adjusted, summary=f"Admins: {action} a member's tokens")

    @router.get("/admin/ledger", response_model=Ledger, summary="Admins: recent ledger lines")
    async def ledger(context: Ctx, me: Me, member: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=200)] = 20) -> Ledger:
        entries = await context.service.ledger(me.actor, member, limit)
        return Ledger(entries=[LedgerLine(
            id=e.id, user=e.account.user, delta=e.delta, balance_after=e.balance_after,
            kind=e.kind.value, job_id=e.job_id, actor=e.actor, reason=e.reason,
            created_at=e.created_at) for e in entries])

    return router


_SELECT = ("SELECT j.*, a.platform, a.community, a.user FROM jobs j "
           "JOIN accounts a ON a.id = j.account_id")
_MEDIA = {"mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg"}


def _adjust_route(action: str) -> Any:
    async def adjust(context: Ctx, me: Me, body: Adjust) -> Adjusted:
        balance = await context.service.adjust_balance(me.actor, action, body.member,
                                                       body.amount, body.reason)
        return Adjusted(member=body.member, balance=balance)
    adjust.__name__ = f"admin_{action}"
    return adjust


# ----------------------------------------------------------------------- helpers


def _require_ready(context: WebContext) -> None:
    if not context.ready:
        raise ApiError(503, "model_loading", "The model is still loading; try again shortly.",
                       headers={"Retry-After": "5"})


def _idempotency(me: Caller, operation: str, value: str | None) -> str:
    """The core's idempotency key: namespaced by key id and operation, so two keys (or a
    generate and a reroll) never collide. No header: a fresh key (every call is new)."""
    if value is None:
        return f"api:{me.key.id}:{uuid.uuid4().hex}"
    value = value.strip()
    if not 0 < len(value) <= MAX_IDEMPOTENCY_KEY or not value.isprintable():
        raise InvalidRequest("request id", f"must be 1 to {MAX_IDEMPOTENCY_KEY} printable "
                             "characters")
    return f"api:{me.key.id}:{operation}:{value}"


def _conflict() -> ApiError:
    return ApiError(409, "idempotency_conflict", "This Idempotency-Key was already used "
                    "with a different request; use a new key for a new request.",
                    field="Idempotency-Key")


def _same_request(job: Job, wanted: GenerationParams, webhook: str | None) -> bool:
    """Whether a retried generate asks for what the first one did (a seed left out matches
    the one chosen then)."""
    if not wanted.seed_given:
        wanted = replace(wanted, seed=job.params.seed, seed_given=job.params.seed_given)
    return job.params == wanted and job.destination.extra.get("webhook_url") == webhook


async def _destination(me: Caller, webhook: str | None, config: Config) -> Destination:
    extra: dict[str, Any] = {"key_id": me.key.id, "member_platform": me.key.platform}
    if webhook:
        extra["webhook_url"] = await _webhook_target(webhook, config)
    return Destination(PLATFORM, me.actor.community, "http", me.actor.user,
                       upload_limit=2**40, extra=extra)


async def _webhook_target(url: str, config: Config) -> str:
    """The webhook URL to store, checked: http(s), and no loopback/private address unless the
    operator allows it (``api.webhooks_allow_private``). The check resolves the host name:
    in a thread, since a slow resolver would stall every request on the loop."""
    return await asyncio.to_thread(check_url, url, config.api.webhooks_allow_private)


async def _my_job(context: WebContext, me: Caller, track_id: int) -> Job:
    """The job if it is the caller's own; otherwise 404, the same as an unknown id."""
    try:
        job = await context.service.get_job(track_id)
    except InvalidRequest:
        raise JobNotFound(track_id) from None
    if job.account != me.account:
        raise JobNotFound(track_id)
    return job


async def _finished(context: WebContext, me: Caller, track_id: int) -> Job:
    job = await _my_job(context, me, track_id)
    if job.state not in (JobState.RENDERED, JobState.DONE) or job.track is None:
        raise ApiError(409, "not_ready", f"Track {track_id} is {STATUS[job.state]}; its "
                       "files exist once it is completed.", track_status=STATUS[job.state])
    # The worker that made it may be on another machine: this process's copy of the files.
    here = await context.service.tracks.local(job.track)
    return replace(job, track=here) if here is not None else job


async def _track_file(context: WebContext, me: Caller, track_id: int) -> tuple[Path, str]:
    job = await _finished(context, me, track_id)
    assert job.track is not None
    return _existing(job.track.path, "audio file"), job.track.format


def _existing(path: str | None, what: str) -> Path:
    if not path or not Path(path).is_file():
        raise ApiError(410, "gone", f"The {what} is no longer stored (old tracks are "
                       "deleted after the server's retention time).")
    return Path(path)


def _base(request: Request, context: WebContext) -> str:
    configured = context.config.api.public_base_url.rstrip("/")
    return configured or str(request.base_url).rstrip("/")


def _accepted(request: Request, context: WebContext, receipt: Receipt) -> Accepted:
    base = f"{_base(request, context)}/v1/music"
    takes = [TakeRef(id=job.id, status=STATUS[job.state], url=f"{base}/{job.id}")
             for job in receipt.group or (receipt.job,)]
    return Accepted(id=receipt.job.id, status=STATUS[receipt.job.state],
                    position=receipt.position, price=receipt.price,
                    balance_after=receipt.balance, eta_s=receipt.eta_s,
                    duplicate=receipt.duplicate, url=f"{base}/{receipt.job.id}", takes=takes)


async def track_object(base_url: str, context: WebContext, job: Job) -> TrackObject:
    """The JSON view of a job (what webhooks also carry); URLs start with ``base_url``
    (``api.public_base_url``, or the address the request came to)."""
    base = f"{base_url}/v1/music/{job.id}"
    made = job.state in (JobState.RENDERED, JobState.DONE) and job.track is not None
    running = context.progress.get(job.id) if job.state is JobState.RUNNING else None
    position = None
    if job.state is JobState.QUEUED:
        async with context.service.db.reader_snapshot() as conn:
            position = await jobs.position(conn, job.id)
    p = job.params
    return TrackObject(
        id=job.id, status=STATUS[job.state], prompt=p.prompt, genre=p.genre or None,
        tempo=p.tempo, duration=p.duration, output_format=p.format, model=p.model, seed=p.seed,
        sampling=Sampling(temperature=p.temperature, top_k=p.top_k, top_p=p.top_p,
                          cfg=p.cfg_coef),
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        progress=1.0 if made else (running.fraction if running else None),
        eta_s=running.eta_s if running else None, position=position, cost=job.price,
        refunded=job.refunded, error=job.error if job.state is JobState.FAILED else None,
        audio_url=f"{base}/audio" if made else None,
        download_url=f"{base}/download" if made else None,
        waveform_url=f"{base}/waveform" if made and job.track and job.track.waveform_data_path
        else None,
        waveform_png_url=f"{base}/waveform.png" if made and job.track and
        job.track.waveform_path else None,
        continue_from=p.continue_from,
        share_url=page_url(context.config, job),
        stems=await _stem_urls(base_url, context, job) if made else None)


async def _stem_urls(base_url: str, context: WebContext, job: Job) -> dict[str, str] | None:
    """Stem name → URL: a stems job's own files, or a music job's latest finished stems."""
    source = job
    if job.kind != "stems":
        found = await context.service.db.fetchone(
            "SELECT id FROM jobs WHERE source_job_id = ? AND kind = 'stems' "
            "AND state IN ('rendered', 'done') ORDER BY id DESC LIMIT 1", (job.id,))
        if found is None:
            return None
        source = await context.service.get_job(int(found[0]))
    if source.track is None or not source.track.stems:
        return None
    return {name: f"{base_url}/v1/music/{source.id}/stems/{name}" for name in source.track.stems}
