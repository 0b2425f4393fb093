"""HTTP front end: a JSON API, an OpenAI-compatible chat endpoint and (mounted by ``web``) the UI.

Everything here is a thin layer over :class:`~perceive_anything.PerceiveAnything` and ``results.py``.
FastAPI and uvicorn come with the ``server`` extra and are imported only when an app is built.
"""

from __future__ import annotations

from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def create_app(predictor, settings: ServerSettings | None = None):
    """The FastAPI app serving ``predictor`` (see :mod:`perceive_anything.server.app`)."""
    from .app import create_app as _create_app

    return _create_app(predictor, settings)
