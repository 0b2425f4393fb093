"""The web UI in a real headless Chromium (Debian's ``chromium``) against the real ``pam serve`` process
with the embedded tiny model (the session's ``pam_server`` fixture, tests/conftest.py): box, click,
brush, EN/ZH, downloads, error display, video tracking and streaming captions.

Screenshots go to ``$PAM_TEST_ARTIFACTS/web-ui`` (else a pytest temp folder) so a person can look at them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

# Debian's chromium by default; PAM_CHROMIUM names another Chromium binary
CHROMIUM = os.environ.get("PAM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no chromium binary at {CHROMIUM} (Debian: apt-get install chromium, or set PAM_CHROMIUM); "
                "browser tests skipped", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")
pytest.importorskip("fastapi", reason="the server extra is not installed")

from perceive_anything.training.synthetic import first_color_word  # noqa: E402
from perceive_anything.web import samples  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
MODEL_TIMEOUT_MS = 90_000  # one model call on a busy 2-core CI machine
SAMPLE = "shapes-1.png"
VIDEO_SAMPLE = "shapes-video.mp4"
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    root = os.environ.get("PAM_TEST_ARTIFACTS")
    out = Path(root) / "web-ui" if root else tmp_path_factory.mktemp("web-ui")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, pam_server):
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(pam_server.url + "/")
    pg.wait_for_function("() => window.pam && window.pam.state.model !== null && window.pam.state.samplesLoaded", timeout=30_000)
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _open_sample(page, name=SAMPLE):
    # the page opens the first sample by itself when the embedded model is served; wait for that
    page.wait_for_function("() => window.pam.image.id !== null && !window.pam.image.loading", timeout=30_000)
    page.click(f"img[data-sample='{name}']")
    page.wait_for_function(f"() => window.pam.image.name === '{name}' && !window.pam.image.loading", timeout=30_000)


def _to_client(page, canvas_sel: str, x: float, y: float, size: tuple[int, int]) -> tuple[float, float]:
    """Image pixel (x, y) -> page coordinates on the canvas ``canvas_sel`` showing an image of ``size`` (w, h)."""
    r = page.locator(canvas_sel).bounding_box()
    return r["x"] + (x + 0.5) * r["width"] / size[0], r["y"] + (y + 0.5) * r["height"] / size[1]


def _drag(page, canvas_sel, start, end, size):
    page.mouse.move(*_to_client(page, canvas_sel, *start, size))
    page.mouse.down()
    page.mouse.move(*_to_client(page, canvas_sel, *end, size), steps=8)
    page.mouse.up()


def _canvas_rgba(page, canvas_sel: str, size=(256, 256)) -> np.ndarray:
    """(H, W, 4) uint8: the canvas sampled at the centre of each image pixel (the page draws a
    256-px sample upscaled)."""
    flat = page.evaluate(
        """([sel, w, h]) => { const c = document.querySelector(sel); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                              const out = new Array(w * h * 4);
                              for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
                                const cx = Math.floor((x + 0.5) * c.width / w), cy = Math.floor((y + 0.5) * c.height / h);
                                for (let k = 0; k < 4; k++) out[(y * w + x) * 4 + k] = d[(cy * c.width + cx) * 4 + k];
                              }
                              return out; }""",
        [canvas_sel, *size],
    )
    return np.array(flat, dtype=np.uint8).reshape(size[1], size[0], 4)


def _overlay_alpha(page, canvas_sel: str) -> np.ndarray:
    """(H, W) bool: which image pixels the overlay paints over."""
    return _canvas_rgba(page, canvas_sel)[..., 3] > 0


def _wait_described(page, region: int = 0):
    page.wait_for_function(f"() => {{ const r = window.pam.image.regions[{region}]; return r && r.result !== null && !r.status; }}",
                           timeout=MODEL_TIMEOUT_MS)


def _region_texts(page, region: int = 0) -> dict[str, str]:
    li = page.locator(f"#region-list li[data-region='{region}']")
    return {dd.get_attribute("data-task"): dd.inner_text() for dd in li.locator("dd").all()}


def _covers(painted: np.ndarray, truth: np.ndarray) -> float:
    return float((painted & truth).sum() / truth.sum())


def test_model_line_samples_and_first_scene(page, artifacts):
    line = page.inner_text("#model-line")
    assert "embedded" in line and "only knows generated shapes" in line, line
    names = page.eval_on_selector_all("#sample-list img", "els => els.map(e => e.dataset.sample)")
    assert names == [s["name"] for s in samples.catalogue()["samples"]]
    # with the embedded model the first sample is open at once: a newcomer only has to click
    page.wait_for_function("() => window.pam.image.id !== null && !window.pam.image.loading", timeout=30_000)
    assert page.evaluate("() => window.pam.image.name") == names[0]
    rgb = _canvas_rgba(page, "#image-canvas")[..., :3]
    assert np.abs(rgb.astype(int) - samples.scene(names[0]).image).mean() < 2  # the sample is what is shown


def test_box_gives_mask_then_streamed_texts_and_downloads(page, artifacts, tmp_path):
    scene = samples.scene(SAMPLE)
    _open_sample(page)
    assert not _overlay_alpha(page, "#image-overlay").any()
    obj = max(scene.objects, key=lambda o: o.area)
    x1, y1, x2, y2 = obj.box
    _drag(page, "#image-overlay", (x1 - 2, y1 - 2), (x2 + 1, y2 + 1), (256, 256))
    # the mask comes from /v1/segment before any text
    page.wait_for_function("() => window.pam.image.regions[0] && window.pam.image.regions[0].mask", timeout=MODEL_TIMEOUT_MS)
    painted = _overlay_alpha(page, "#image-overlay")
    assert _covers(painted, obj.mask) > 0.8
    _wait_described(page)
    page.screenshot(path=str(artifacts / "box.png"))
    # the mask came first, then the texts streamed in token by token, then the final result
    timeline = page.evaluate("() => window.pam.image.regions[0].timeline")
    assert timeline["mask"] < timeline["firstToken"] < timeline["result"], timeline
    texts = _region_texts(page)
    assert set(texts) == {"label", "definition", "brief_caption"}
    assert all(texts.values()), texts
    # the embedded model was trained on these scenes: its English caption names a colour
    assert first_color_word(texts["brief_caption"]) is not None, texts
    assert not CJK.search(" ".join(texts.values()))

    with page.expect_download() as dl:
        page.click("#download-json")
    data = json.loads(Path(dl.value.path()).read_text())
    assert data["image_size"] == {"width": 256, "height": 256}
    assert len(data["regions"]) == 1
    region = data["regions"][0]
    assert np.abs(np.subtract(region["prompt"]["box"], [x1 - 2, y1 - 2, x2 + 1, y2 + 1])).max() <= 1
    assert [o["task"] for o in region["outputs"]] == ["label", "definition", "brief_caption"]
    assert region["mask_rle"]["size"] == [256, 256]

    with page.expect_download() as dl:
        page.click("#download-png")
    from PIL import Image

    dl.value.save_as(artifacts / "overlay-download.png")
    png = Image.open(dl.value.path()).convert("RGB")
    assert png.size == (256, 256)
    base = scene.image.astype(int)
    changed = np.abs(np.asarray(png, dtype=int) - base).sum(-1) > 30
    assert _covers(changed, obj.mask) > 0.8  # the mask is drawn into the PNG
    assert changed.mean() < 0.5  # and the rest of the image is still the image


def test_clicks_positive_and_negative(page, artifacts):
    scene = samples.scene(SAMPLE)
    _open_sample(page)
    obj = max(scene.objects, key=lambda o: o.area)
    ys, xs = np.nonzero(obj.mask)
    inside = (int(np.median(xs)), int(np.median(ys)))
    page.mouse.click(*_to_client(page, "#image-overlay", *inside, (256, 256)))
    page.wait_for_function("() => window.pam.image.regions[0] && window.pam.image.regions[0].mask", timeout=MODEL_TIMEOUT_MS)
    assert _covers(_overlay_alpha(page, "#image-overlay"), obj.mask) > 0.5
    # right click on the background: a negative point on the same region
    background = ~np.logical_or.reduce([o.mask for o in scene.objects])
    ys, xs = np.nonzero(background[:200])  # the upper part of the image is on screen
    page.mouse.click(*_to_client(page, "#image-overlay", int(xs[0]), int(ys[0]), (256, 256)), button="right")
    prompt = page.evaluate("() => window.pam.image.regions.map(r => r.prompt)")
    assert len(prompt) == 1 and prompt[0]["labels"] == [1, 0]
    _wait_described(page)
    page.screenshot(path=str(artifacts / "clicks.png"))
    assert "2 points (+1/−1)" in page.inner_text("#region-list li[data-region='0'] .meta")
    assert all(_region_texts(page).values())
    # a free question about the region adds an answer
    page.fill("#question", "What colour is it?")
    page.dispatch_event("#question", "change")
    page.wait_for_function("() => { const r = window.pam.image.regions[0]; return r.result && !r.status && "
                           "r.result.regions[0].outputs.some(o => o.task === 'question'); }", timeout=MODEL_TIMEOUT_MS)
    assert _region_texts(page)["question"].strip()


def test_brush_mask_region(page, artifacts):
    scene = samples.scene(SAMPLE)
    _open_sample(page)
    obj = max(scene.objects, key=lambda o: o.area)
    x1, y1, x2, y2 = obj.box
    page.click("#mode-brush")
    page.fill("#brush-size", "80")  # screen pixels: about 30 image pixels here
    page.dispatch_event("#brush-size", "input")
    # paint the object with two strokes: one mask region (SAM refines the painted mask)
    for x in (x1 + 14, x2 - 15):
        _drag(page, "#image-overlay", (x, y1 + 12), (x, y2 - 13), (256, 256))
    page.wait_for_function("() => window.pam.image.regions[0] && window.pam.image.regions[0].mask", timeout=MODEL_TIMEOUT_MS)
    regions = page.evaluate("() => window.pam.image.regions.map(r => r.kind)")
    assert regions == ["mask"]
    _wait_described(page)
    page.screenshot(path=str(artifacts / "brush.png"))
    painted = _overlay_alpha(page, "#image-overlay")
    assert _covers(painted, obj.mask) > 0.5
    assert (painted & obj.mask).sum() / painted.sum() > 0.8  # and it stays on the object
    assert all(_region_texts(page).values())


def test_language_switch_gives_chinese(page, artifacts):
    scene = samples.scene(SAMPLE)
    _open_sample(page)
    objs = sorted(scene.objects, key=lambda o: -o.area)[:2]
    for o in objs:  # two regions, each in its own colour
        x1, y1, x2, y2 = o.box
        _drag(page, "#image-overlay", (x1 - 1, y1 - 1), (x2, y2), (256, 256))
        page.click("#new-region")
    _wait_described(page, 0)
    _wait_described(page, 1)
    colors = page.evaluate("() => window.pam.image.regions.map(r => r.color)")
    assert len(set(colors)) == 2
    english = _region_texts(page, 0)
    page.click("#lang-zh")
    page.wait_for_function("() => window.pam.image.regions.every(r => r.result && r.resultLang === 'zh' && !r.status)",
                           timeout=MODEL_TIMEOUT_MS)
    page.screenshot(path=str(artifacts / "zh.png"))
    for i in range(2):
        texts = _region_texts(page, i)
        assert all(CJK.search(v) for v in texts.values()), texts
    assert _region_texts(page, 0) != english
    assert page.inner_text("#tab-image .toolbar .button.file") == "上传图像"
    assert "内置微型形状模型" in page.inner_text("#model-line")


def test_bad_upload_shows_the_server_error(page, tmp_path):
    _open_sample(page)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    page.set_input_files("#image-file", str(bad))
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    text = page.inner_text("#error-text")
    assert "HTTP 4" in text and "image" in text.lower(), text
    # the refused upload did not replace the image that was open
    assert page.evaluate("() => window.pam.image.name") == SAMPLE


def test_rle_decoder_matches_pycocotools(page):
    from perceive_anything.results import mask_to_rle

    rng = np.random.default_rng(0)
    masks = [rng.random((37, 53)) < 0.5, np.zeros((5, 7), bool), np.ones((9, 4), bool)]
    big = np.zeros((300, 400), bool)
    big[10:290, 3:399] = True
    masks.append(big)
    for m in masks:
        flat = page.evaluate("(rle) => Array.from(window.pam.decodeRle(rle).data)", mask_to_rle(m))
        assert np.array_equal(np.array(flat, dtype=bool), m.T.ravel())  # column-major, as COCO


def test_video_tracking_shows_masks_and_caption(page, artifacts, tmp_path):
    video = samples.scene(VIDEO_SAMPLE)
    path = tmp_path / "clip.mp4"
    path.write_bytes(samples.load(VIDEO_SAMPLE)[0])
    page.click("nav button[data-tab='video']")
    page.set_input_files("#video-file", str(path))
    page.wait_for_function("() => window.pam.video.info !== null", timeout=30_000)
    obj = video.objects[0]
    prompt_frame = 4  # a prompt on a later frame: tracked forwards and backwards from there
    assert obj.boxes[prompt_frame] is not None and obj.boxes[0] is not None
    page.fill("#video-frame", str(prompt_frame))
    page.dispatch_event("#video-frame", "input")
    page.wait_for_function(f"() => window.pam.video.shown === {prompt_frame}")
    x1, y1, x2, y2 = obj.boxes[prompt_frame]
    _drag(page, "#video-overlay", (x1 - 1, y1 - 1), (x2, y2), (256, 256))
    assert page.evaluate("() => window.pam.video.objects.map(o => o.frame)") == [prompt_frame]
    page.click("#video-run")
    page.wait_for_function("() => window.pam.video.result !== null", timeout=MODEL_TIMEOUT_MS)
    caption = page.inner_text("#object-list li[data-object='0'] dd")
    assert caption.strip()
    # a later frame, where the object has moved: its tracked mask is drawn there
    last = next(t for t in range(len(video.frames) - 1, 0, -1) if obj.boxes[t] is not None)
    page.fill("#video-frame", str(last))
    page.dispatch_event("#video-frame", "input")
    page.wait_for_function(f"() => window.pam.video.shown === {last}")  # frame decoded, masks painted
    page.screenshot(path=str(artifacts / "video.png"))
    painted = _overlay_alpha(page, "#video-overlay")
    assert _covers(painted, obj.masks[last]) > 0.5
    assert "Object 1" in page.inner_text("#object-list")
    page.fill("#video-frame", "0")
    page.dispatch_event("#video-frame", "input")
    page.wait_for_function("() => window.pam.video.shown === 0")
    assert _covers(_overlay_alpha(page, "#video-overlay"), obj.masks[0]) > 0.5  # the backward pass
    # playback walks through the frames by itself, and pauses
    page.click("#video-play")
    page.wait_for_function("() => window.pam.video.shown >= 3", timeout=10_000)
    page.click("#video-play")
    assert page.inner_text("#video-play") == "Play"


def test_stream_tab_shows_caption_events(page, artifacts):
    video = samples.scene(VIDEO_SAMPLE)
    page.click("nav button[data-tab='stream']")
    page.click(f"#tab-stream button[data-sample='{VIDEO_SAMPLE}']")
    page.wait_for_function("() => window.pam.stream.info !== null", timeout=30_000)
    x1, y1, x2, y2 = video.objects[0].boxes[0]
    _drag(page, "#stream-overlay", (x1 - 1, y1 - 1), (x2, y2), (256, 256))
    page.fill("#stream-clip", "1s")
    page.click("#stream-start")
    page.wait_for_function("() => document.querySelectorAll('#event-list li').length >= 2", timeout=MODEL_TIMEOUT_MS)
    page.wait_for_function("() => document.querySelector('#stream-info').textContent === 'finished'", timeout=MODEL_TIMEOUT_MS)
    page.screenshot(path=str(artifacts / "stream.png"))
    events = page.locator("#event-list li").all()
    fps = samples.catalogue()["videos"][0]["fps"]
    assert len(events) == -(-len(video.frames) // fps)  # one event per 1-second clip
    assert all(e.locator(".text").inner_text().strip() for e in events)
    # Stop ends the stream early and says so
    page.fill("#stream-clip", "4")
    page.click("#stream-start")
    page.wait_for_function("() => document.querySelectorAll('#event-list li').length >= 1", timeout=MODEL_TIMEOUT_MS)
    page.click("#stream-stop")
    page.wait_for_function("() => document.querySelector('#stream-info').textContent === 'stopped'", timeout=10_000)
    assert page.locator("#event-list li").count() < len(video.frames) // 4
