"""The web package's HTTP side on the real ``pam serve`` (no browser needed): the page and its assets
at ``/`` and ``/static``, and the bundled samples at ``/v1/samples``."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from perceive_anything.web import samples


def _get(url: str):
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.status, r.headers, r.read()


def test_page_and_assets(pam_server):
    status, headers, body = _get(pam_server.url + "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert headers["cache-control"] == "no-cache"
    page = body.decode()
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page
        status, _, data = _get(pam_server.url + asset)
        assert status == 200 and len(data) > 1000


def test_samples_are_the_generated_scenes(pam_server):
    from PIL import Image

    _, _, body = _get(pam_server.url + "/v1/samples")
    catalogue = json.loads(body)
    names = [s["name"] for s in catalogue["samples"]]
    assert names == [s.name for s in samples.SAMPLES if s.kind == "image"]
    first = catalogue["samples"][0]
    status, headers, png = _get(pam_server.url + first["url"])
    assert status == 200 and headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert image.shape == (first["height"], first["width"], 3)
    assert np.array_equal(image, samples.scene(first["name"]).image)  # lossless, same seed
    if catalogue["videos"]:  # needs PyAV (the video extra)
        video = catalogue["videos"][0]
        status, headers, mp4 = _get(pam_server.url + video["url"])
        assert headers["content-type"] == "video/mp4" and mp4[4:8] == b"ftyp"


def test_unknown_sample_is_a_404_naming_the_known_ones(pam_server):
    with pytest.raises(urllib.error.HTTPError) as err:
        _get(pam_server.url + "/v1/samples/nope.png")
    assert err.value.code == 404
    body = json.loads(err.value.read())["error"]
    assert body["param"] == "name" and body["type"] == "not_found_error" and "shapes-1.png" in body["message"]
