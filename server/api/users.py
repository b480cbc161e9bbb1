"""Placeholder: filled in by the users work (issue 4)."""

from fastapi import APIRouter

router = APIRouter(tags=["users"])
