"""Placeholder: filled in by the auth work (issue 4)."""

from fastapi import APIRouter

router = APIRouter(tags=["auth"])
