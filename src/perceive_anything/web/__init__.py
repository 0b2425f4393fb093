"""The browser front end of ``pam serve``: a static page (HTML + vanilla JS + CSS, nothing to build)
that speaks only the server's public ``/v1`` API, plus the bundled sample endpoints it offers
newcomers (generated shapes-world scenes, the world the embedded tiny model knows).

A static page rather than Gradio: clicks, right-clicks, box drags, a brush, per-region colours and
frame-accurate mask playback are each a few lines on a ``<canvas>``, while Gradio's image widgets
would need custom components for most of them and a second app inside the FastAPI one.

``mount(app)`` is the only entry point; ``server.create_app`` calls it (its error handler turns the
server's ``ApiError`` into the shared ``{"error": {...}}`` body).
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"

__all__ = ["STATIC_DIR", "mount"]


def mount(app) -> None:
    """Serve the page at ``/`` (assets under ``/static``) and the samples under ``/v1/samples``."""
    from fastapi import Response
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    from ..server.errors import NotFound
    from . import samples

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="web-static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        # no-cache: a page from an older install must not talk to a newer server's API
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/v1/samples", tags=["samples"], summary="Bundled sample images and videos")
    def list_samples() -> dict:
        return samples.catalogue()

    @app.get("/v1/samples/{name}", tags=["samples"], summary="One bundled sample (PNG image or mp4 video)")
    def get_sample(name: str):
        try:
            data, media_type = samples.load(name)
        except KeyError:
            raise NotFound(f"unknown sample {name!r}; known samples: {', '.join(samples.names())}", "name") from None
        return Response(content=data, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})
