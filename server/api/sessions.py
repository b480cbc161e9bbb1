"""Placeholder: filled in by the sessions work (issue 4)."""

from fastapi import APIRouter

router = APIRouter(tags=["sessions"])
