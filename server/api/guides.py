"""Placeholder: filled in by the guides work (issue 4)."""

from fastapi import APIRouter

router = APIRouter(tags=["guides"])
