"""The ``/v1`` JSON API (generate, tracks, balance, admin)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1")
