"""Shared track pages (``/t/{share_id}``): player, waveform and downloads, no external assets.

A page exists only while its track is shared (:mod:`bot.core.sharing`); every other id —
unknown, unshared, unfinished, deleted — gets the same 404, so a visitor learns nothing about
tracks they were not given. The page names no member and no community. Everything it loads
comes from this server (``/assets/…`` and the track's own URLs), so it works on a LAN without
internet, and the Content-Security-Policy forbids anything else.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, HTMLResponse, Response

from bot.config import FORMATS
from bot.core.models import Job, Track
from bot.core.sharing import TrackNotShared
from bot.platforms.web.context import WebContext, web_context
from bot.platforms.web.downloads import MEDIA_TYPES, download_file

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"track-page.js": "text/javascript", "track-page.css": "text/css"}
"""The only files ``/assets/`` serves (no directory listing, no path from the URL)."""

NOISE_LABEL = ("Made with a random-initialised test model (debug): this audio is noise, "
               "not music.")
PRIVATE = {
    "Cache-Control": "no-store",  # an unshared page must not live on in caches
    "Referrer-Policy": "no-referrer",  # the share id stays out of other sites' logs
    "X-Robots-Tag": "noindex, nofollow",  # shared with a link, not published
    "X-Content-Type-Options": "nosniff",
}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "media-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
PAGE_HEADERS = {**PRIVATE, "Content-Security-Policy": CSP}

Context = Annotated[WebContext, Depends(web_context)]


async def _shared(context: WebContext, share_id: str) -> tuple[Job, Track] | None:
    try:
        job, track = await context.service.sharing.shared_track(share_id)
    except TrackNotShared:
        return None
    # This process's copy (the worker may be on another machine); None once deleted.
    here = await context.service.tracks.local(track)
    return None if here is None else (job, here)


def _not_found() -> Response:
    return Response("Not found\n", status_code=404, media_type="text/plain", headers=PRIVATE)


@router.get("/t/{share_id}", response_class=HTMLResponse)
async def track_page(share_id: str, context: Context) -> Response:
    """The page: prompt, settings, player, waveform, downloads (404 page when not shared)."""
    found = await _shared(context, share_id)
    if found is None:
        return HTMLResponse(NOT_FOUND_HTML, status_code=404, headers=PAGE_HEADERS)
    job, track = found
    return HTMLResponse(render_page(share_id, job, track), headers=PAGE_HEADERS)


@router.api_route("/t/{share_id}/audio", methods=["GET", "HEAD"])
async def track_audio(share_id: str, context: Context) -> Response:
    """The stored file, with ``Range`` support so players can seek."""
    found = await _shared(context, share_id)
    if found is None:
        return _not_found()
    _, track = found
    return FileResponse(track.path, media_type=MEDIA_TYPES.get(track.format), headers=PRIVATE)


@router.get("/t/{share_id}/waveform.json")
async def track_waveform(share_id: str, context: Context) -> Response:
    """The peaks the page draws (``generation.audio.waveform_peaks`` format)."""
    found = await _shared(context, share_id)
    if found is None:
        return _not_found()
    _, track = found
    data = track.waveform_data_path
    if not data or not Path(data).is_file():
        return _not_found()
    return FileResponse(data, media_type="application/json", headers=PRIVATE)


@router.api_route("/t/{share_id}/download/{fmt}", methods=["GET", "HEAD"])
async def track_download(share_id: str, fmt: str, context: Context) -> Response:
    """The track as an attachment in ``fmt`` (mp3, wav, flac, ogg), converted on demand."""
    found = await _shared(context, share_id)
    if found is None or fmt not in FORMATS:
        return _not_found()
    _, track = found
    try:
        path = await download_file(track, fmt)
    except OSError:  # deleted by the retention sweep in the meantime
        return _not_found()
    return FileResponse(path, media_type=MEDIA_TYPES[fmt], headers=PRIVATE,
                        filename=f"musicbot-{share_id}.{fmt}")


@router.get("/t/{share_id}/stems/{name}")
async def track_stem(share_id: str, name: str, context: Context) -> Response:
    """One separated stem (vocals, drums, bass, other) when the track has them."""
    found = await _shared(context, share_id)
    if found is None:
        return _not_found()
    path = (found[1].stems or {}).get(name)
    if path is None or not Path(path).is_file():
        return _not_found()
    return FileResponse(path, media_type=MEDIA_TYPES.get(Path(path).suffix.lstrip(".")),
                        headers=PRIVATE, filename=f"musicbot-{share_id}-{name}{Path(path).suffix}")


@router.get("/assets/{name}")
async def asset(name: str) -> Response:
    """The page's own script and style sheet (served here: no CDN, works offline)."""
    if name not in ASSETS:
        return _not_found()
    return FileResponse(STATIC / name, media_type=ASSETS[name],
                        headers={"Cache-Control": "public, max-age=3600"})


# ----------------------------------------------------------------------------- stems

# ----------------------------------------------------------------------------- HTML

def _e(text: object) -> str:
    """Member text → inert HTML (the prompt may hold ``<script>``; it shows as typed)."""
    return html.escape(str(text), quote=True)


def settings_rows(job: Job, track: Track) -> list[tuple[str, str]]:
    """(label, value) pairs of what made the track, as the page lists them (unescaped)."""
    p = job.params
    rows = [("Model", p.model), ("Seed", str(p.seed)), ("Duration", f"{track.duration_s:.1f} s")]
    if p.genre:
        rows.append(("Genre", p.genre))
    if p.tempo:
        rows.append(("Tempo", f"{p.tempo} BPM"))
    sampling = f"temperature {p.temperature:g} · top-k {p.top_k} · top-p {p.top_p:g}"
    rows += [("Sampling", sampling), ("Guidance (CFG)", f"{p.cfg_coef:g}"),
             ("Stored as", track.format)]
    if p.continue_from is not None:
        rows.append(("Continues", "an earlier track"))
    return rows


def render_page(share_id: str, job: Job, track: Track) -> str:
    """The whole page; every piece of member text goes through :func:`_e`."""
    base = f"/t/{_e(share_id)}"
    rows = "\n".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in settings_rows(job, track))
    downloads = "\n".join(
        f'<li><a href="{base}/download/{f}" download>{f.upper()}</a></li>' for f in FORMATS)
    stems = "\n".join(
        f'<li><a href="{base}/stems/{_e(name)}" download>{_e(name)}</a></li>'
        for name in sorted(track.stems or {}))
    stems_block = (f'<section><h2>Stems</h2><ul class="links">{stems}</ul></section>'
                   if stems else "")
    noise = f'<p class="noise" role="note">⚠️ {_e(NOISE_LABEL)}</p>' if track.noise else ""
    title = _e(job.params.prompt[:80])
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title} · musicbot</title>
<link rel="stylesheet" href="/assets/track-page.css">
</head>
<body>
<main>
<p class="brand">musicbot</p>
<h1 id="prompt">{_e(job.params.prompt)}</h1>
{noise}
<div id="player" data-waveform="{base}/waveform.json" data-duration="{track.duration_s:g}">
<canvas id="waveform" tabindex="0" aria-label="Waveform: click or use the arrow keys to seek">
</canvas>
<audio id="audio" controls preload="metadata" src="{base}/audio"></audio>
</div>
<section><h2>Download</h2><ul class="links">{downloads}</ul></section>
{stems_block}
<section><h2>Settings</h2><dl id="settings">{rows}</dl></section>
</main>
<script src="/assets/track-page.js" defer></script>
</body>
</html>
"""


NOT_FOUND_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Track not found · musicbot</title>
<link rel="stylesheet" href="/assets/track-page.css">
</head>
<body>
<main>
<p class="brand">musicbot</p>
<h1>Track not found</h1>
<p>This link is wrong, or its owner stopped sharing the track, or it is no longer stored.</p>
</main>
</body>
</html>
"""
