// The perceive-anything web page: plain JS over the server's public /v1 API (see SERVER_CONTRACT /
// README "Web UI"). No framework and no build step, so the page ships as three static files.
"use strict";

// ---------------------------------------------------------------------------------------------
// Texts (EN / ZH). The same switch picks the model's output language.
// ---------------------------------------------------------------------------------------------
const I18N = {
  en: {
    tab_image: "Image", tab_video: "Video", tab_stream: "Streaming captions",
    upload_image: "Upload image", or_sample: "or pick a sample:", mode_prompt: "Click / box", mode_brush: "Brush",
    brush_size: "Size", new_region: "New region", clear_regions: "Clear all",
    task_label: "Label", task_definition: "Definition", task_brief_caption: "Brief caption",
    task_detailed_caption: "Detailed caption", task_question: "Answer", task_video_caption: "Caption",
    question_placeholder: "Optional question about the region",
    image_placeholder: "Upload an image or pick a sample to start.",
    image_hint: "Left click: positive point · right or shift click: negative point · drag: box · Brush mode: paint a mask (shift erases). “New region” starts the next object.",
    regions: "Regions", objects: "Objects", captions: "Caption events",
    download_json: "Download JSON", download_png: "Download overlay PNG",
    upload_video: "Upload video", video_placeholder: "Upload a video (mp4, webm, mov or a zip of frames).",
    play: "Play", pause: "Pause", track: "Track and describe",
    video_hint: "Pick a frame with the slider, then drag a box around each object to track (click adds points). Then “Track and describe”.",
    clip: "Clip", start_stream: "Start captioning", stop: "Stop",
    stream_hint: "Drag a box around the object on the first frame, then start: one caption appears per clip as soon as it is produced, with the previous caption as context.",
    region: "Region", object: "Object", segmenting: "segmenting…", describing: "describing…", done: "done",
    uploading: "uploading…", tracking: "tracking and describing every frame…", streaming: "captioning…",
    stopped: "stopped", finished: "finished", box: "box", point: "point", points: "points", brush: "brush mask",
    on_frame: "on frame", frame: "frame", frames: "frames", score: "score", iou: "IoU", area: "area",
    model: "Model", embedded_note: "the embedded tiny shapes model: it only knows generated shapes scenes (try a sample); serve a real checkpoint with pam serve --model",
    no_image: "load an image first", no_region: "add a region first", no_video: "load a video first",
    no_object: "draw a box around an object first", not_present: "not visible",
    sample_video: "Sample video", clip_n: "clip", absent: "object not visible in this clip",
    num_frames: "Frames to process", all_frames: "all",
  },
  zh: {
    tab_image: "图像", tab_video: "视频", tab_stream: "流式描述",
    upload_image: "上传图像", or_sample: "或选择示例：", mode_prompt: "点击 / 框选", mode_brush: "画笔",
    brush_size: "大小", new_region: "新区域", clear_regions: "全部清除",
    task_label: "标签", task_definition: "定义", task_brief_caption: "简要描述",
    task_detailed_caption: "详细描述", task_question: "回答", task_video_caption: "描述",
    question_placeholder: "可选：关于该区域的问题",
    image_placeholder: "上传图像或选择示例开始。",
    image_hint: "左键：正点 · 右键或 Shift+点击：负点 · 拖动：框 · 画笔模式：涂抹掩码（Shift 擦除）。“新区域”开始下一个目标。",
    regions: "区域", objects: "目标", captions: "描述事件",
    download_json: "下载 JSON", download_png: "下载叠加图 PNG",
    upload_video: "上传视频", video_placeholder: "上传视频（mp4、webm、mov 或帧的 zip 包）。",
    play: "播放", pause: "暂停", track: "跟踪并描述",
    video_hint: "用滑块选择一帧，然后框选每个要跟踪的目标（点击添加点），再点击“跟踪并描述”。",
    clip: "片段", start_stream: "开始描述", stop: "停止",
    stream_hint: "在第一帧上框选目标后开始：每个片段处理完立即给出一条描述，并以上一条描述为上下文。",
    region: "区域", object: "目标", segmenting: "分割中…", describing: "描述中…", done: "完成",
    uploading: "上传中…", tracking: "正在逐帧跟踪并描述…", streaming: "描述中…",
    stopped: "已停止", finished: "已完成", box: "框", point: "点", points: "点", brush: "画笔掩码",
    on_frame: "帧", frame: "帧", frames: "帧", score: "得分", iou: "IoU", area: "面积",
    model: "模型", embedded_note: "内置微型形状模型：只认识生成的形状场景（请试用示例）；用 pam serve --model 加载真实权重",
    no_image: "请先加载图像", no_region: "请先添加区域", no_video: "请先加载视频",
    no_object: "请先框选一个目标", not_present: "不可见",
    sample_video: "示例视频", clip_n: "片段", absent: "该片段中目标不可见",
    num_frames: "处理帧数", all_frames: "全部",
  },
};
// Distinct, colour-blind-friendlier region colours (one per region, cycling).
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324", "#469990", "#808000"];
const MASK_ALPHA = 110; // of 255: the image stays readable under the mask
const DRAG_THRESHOLD_PX = 5; // screen pixels a press must move to count as a box drag, not a click

const state = { lang: "en", model: null, samplesLoaded: false };
const $ = (sel, root = document) => root.querySelector(sel);
const t = (key) => (I18N[state.lang] && I18N[state.lang][key]) || I18N.en[key] || key;

// ---------------------------------------------------------------------------------------------
// API helpers: every non-2xx answer becomes an ApiError carrying the server's {"error": {...}}
// ---------------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body, retryAfter) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}: the server sent no error details`);
    this.detailed = Boolean(e.message);
    this.status = status;
    this.type = e.type || null;
    this.param = e.param || null;
    this.retryAfter = retryAfter;
  }
}

async function api(path, { method = "GET", json, form, signal } = {}) {
  const opts = { method, signal, headers: {} };
  if (json !== undefined) {
    opts.body = JSON.stringify(json);
    opts.headers["Content-Type"] = "application/json";
  } else if (form) {
    opts.body = form;
  }
  const response = await fetch(path, opts);
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON: fall back to the status */ }
    throw new ApiError(response.status, body, response.headers.get("Retry-After"));
  }
  return response;
}

function showError(err) {
  if (!err || err.name === "AbortError") return;
  console.error(err);
  let text = err.message || String(err);
  if (err instanceof ApiError && err.detailed) {
    const bits = err.status ? [`HTTP ${err.status}`] : [];
    if (err.type) bits.push(err.type);
    if (err.param) bits.push(`param: ${err.param}`);
    if (err.retryAfter) bits.push(`retry after ${err.retryAfter} s`);
    text = `${text}  (${bits.join(" · ")})`;
  }
  $("#error-text").textContent = text;
  $("#error").hidden = false;
}
function clearError() { $("#error").hidden = true; }

// Server-sent events over fetch (EventSource cannot POST): yields {event, data} with data parsed as JSON.
async function* readSSE(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const ev = parseSSEBlock(block);
      if (ev) yield ev;
    }
  }
  const last = parseSSEBlock(buffer);
  if (last) yield last;
}

function parseSSEBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  const text = data.join("\n");
  let parsed;
  try { parsed = JSON.parse(text); } catch (_) { parsed = text; }
  return { event, data: parsed };
}

// an "event: error" inside a stream that had started with 200: no HTTP status to show
function sseError(data) {
  const err = new ApiError(null, data, null);
  err.detailed = false;
  return err;
}

// ---------------------------------------------------------------------------------------------
// COCO RLE (pycocotools' compressed string): counts alternate 0-runs and 1-runs over the mask in
// column-major order; each count is stored as 5-bit groups in chars offset by 48, the 0x20 bit
// meaning "more groups follow", the 0x10 bit of the last group the sign, and from the third count
// on as the difference to the count two places back.
// ---------------------------------------------------------------------------------------------
function rleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x += (c & 0x1f) * 2 ** (5 * k); // multiplication, not <<: runs can exceed 31 bits
      more = (c & 0x20) !== 0;
      p++; k++;
      if (!more && (c & 0x10)) x -= 2 ** (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// -> {h, w, data: Uint8Array in column-major order (index col * h + row), as the RLE itself}
function decodeRle(rle) {
  const [h, w] = rle.size;
  const counts = typeof rle.counts === "string" ? rleCounts(rle.counts) : rle.counts;
  const data = new Uint8Array(h * w);
  let pos = 0, value = 0;
  for (const n of counts) {
    if (value) data.fill(1, pos, Math.min(pos + n, data.length));
    pos += n;
    value ^= 1;
  }
  return { h, w, data };
}

function hexToRgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

// Paint masks ([{mask, color}], masks at image resolution) onto ctx (canvas resolution): a
// translucent fill plus an opaque outline, sampled nearest-neighbour so big photos stay cheap.
function paintMasks(ctx, masks, ratio = pixelRatio(ctx)) {
  const cw = ctx.canvas.width, ch = ctx.canvas.height;
  if (!masks.length) return;
  const img = ctx.getImageData(0, 0, cw, ch);
  const px = img.data;
  const e = Math.max(1, Math.round(1.5 * ratio)); // outline width: about 1.5 screen pixels
  for (const { mask, color } of masks) {
    const [r, g, b] = hexToRgb(color);
    const sx = mask.w / cw, sy = mask.h / ch;
    const grid = new Uint8Array(cw * ch);
    for (let y = 0; y < ch; y++) {
      const row = Math.min(mask.h - 1, Math.floor((y + 0.5) * sy));
      for (let x = 0; x < cw; x++) {
        const col = Math.min(mask.w - 1, Math.floor((x + 0.5) * sx));
        grid[y * cw + x] = mask.data[col * mask.h + row];
      }
    }
    for (let y = 0; y < ch; y++) {
      for (let x = 0; x < cw; x++) {
        const i = y * cw + x;
        if (!grid[i]) continue;
        const edge = x < e || y < e || x >= cw - e || y >= ch - e ||
          !grid[i - e] || !grid[i + e] || !grid[i - e * cw] || !grid[i + e * cw];
        const a = edge ? 255 : MASK_ALPHA;
        const o = i * 4, keep = 255 - a;
        // "over" compositing onto whatever is already there (other regions' masks)
        const da = px[o + 3];
        const outA = a + (da * keep) / 255;
        px[o] = (r * a + (px[o] * da * keep) / 255) / outA;
        px[o + 1] = (g * a + (px[o + 1] * da * keep) / 255) / outA;
        px[o + 2] = (b * a + (px[o + 2] * da * keep) / 255) / outA;
        px[o + 3] = outA;
      }
    }
  }
  ctx.putImageData(img, 0, 0);
}

// Canvas pixels per screen pixel, so tags and markers keep one on-screen size whatever the
// image size (1 for off-screen canvases such as the PNG export).
function pixelRatio(ctx) {
  const shown = ctx.canvas.clientWidth;
  return shown ? ctx.canvas.width / shown : 1;
}

function drawTag(ctx, x, y, text, color) {
  const k = pixelRatio(ctx);
  const h = 18 * k;
  ctx.font = `bold ${13 * k}px system-ui, sans-serif`;
  const w = ctx.measureText(text).width + 8 * k;
  const ty = Math.max(0, y - h);
  ctx.fillStyle = color;
  ctx.fillRect(x, ty, w, h);
  ctx.fillStyle = "#fff";
  ctx.fillText(text, x + 4 * k, ty + 13 * k);
}

function drawPrompt(ctx, prompt, color, scale) {
  // prompt in image pixels; scale = canvas px per image px
  const k = pixelRatio(ctx);
  if (prompt.box) {
    const [x1, y1, x2, y2] = prompt.box.map((v) => v * scale);
    ctx.lineWidth = 2 * k;
    ctx.strokeStyle = color;
    ctx.setLineDash([6 * k, 4 * k]);
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.setLineDash([]);
  }
  (prompt.points || []).forEach(([x, y], i) => {
    const positive = prompt.labels[i] === 1;
    const cx = x * scale, cy = y * scale;
    ctx.beginPath();
    ctx.arc(cx, cy, 6 * k, 0, 2 * Math.PI);
    ctx.fillStyle = positive ? "#16a34a" : "#dc2626";
    ctx.fill();
    ctx.lineWidth = 2 * k;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
    ctx.fillStyle = "#fff"; // a "+" or "−" inside the dot
    ctx.fillRect(cx - 3 * k, cy - 0.75 * k, 6 * k, 1.5 * k);
    if (positive) ctx.fillRect(cx - 0.75 * k, cy - 3 * k, 1.5 * k, 6 * k);
  });
}

function download(name, blob) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`cannot load image ${src}`));
    img.src = src;
  });
}

// ---------------------------------------------------------------------------------------------
// Stage: an image canvas with an overlay canvas that turns pointer input into prompts in image
// pixels (click = point, right/shift click = negative point, drag = box, brush = mask strokes).
// ---------------------------------------------------------------------------------------------
const STAGE_MAX_VH = 72; // the image may take at most this share of the window height
// Canvas resolution: big photos are shown downscaled, small images upscaled so that masks, outlines
// and tags stay crisp on screen; prompts are always in image pixels.
const MIN_CANVAS_SIDE = 1024;
const MAX_EXPORT_SIDE = 4096;
const MAX_CANVAS_SIDE = 1280;

class Stage {
  constructor(root, handlers) {
    this.root = root;
    // the image canvas and, stacked on it, the overlay that takes the pointer input
    this.base = document.createElement("canvas");
    this.overlay = document.createElement("canvas");
    this.base.id = `${root.id.replace(/-stage$/, "")}-canvas`;
    this.overlay.id = `${root.id.replace(/-stage$/, "")}-overlay`;
    this.overlay.className = "overlay";
    root.prepend(this.base, this.overlay);
    this.overlay.getContext("2d", { willReadFrequently: true }); // masks are composited with getImageData
    this.handlers = handlers;
    this.mode = "prompt";
    this.brushSize = 16;
    this.imageW = 0; this.imageH = 0; this.scale = 1;
    this.drag = null;
    const ov = this.overlay;
    ov.addEventListener("contextmenu", (e) => e.preventDefault());
    ov.addEventListener("pointerdown", (e) => this._down(e));
    ov.addEventListener("pointermove", (e) => this._move(e));
    ov.addEventListener("pointerup", (e) => this._up(e));
    ov.addEventListener("pointercancel", () => { this.drag = null; this.handlers.render(); });
  }

  get loaded() { return this.imageW > 0; }

  setSize(w, h) {
    this.imageW = w; this.imageH = h;
    const side = Math.max(w, h);
    this.scale = Math.min(MAX_CANVAS_SIDE, Math.max(MIN_CANVAS_SIDE, side)) / side;
    const cw = Math.max(1, Math.round(w * this.scale)), ch = Math.max(1, Math.round(h * this.scale));
    for (const c of [this.base, this.overlay]) { c.width = cw; c.height = ch; }
    // as wide as the column, but never taller than most of the window (portrait photos)
    this.root.style.width = `min(100%, calc(${STAGE_MAX_VH}vh * ${w / h}))`;
    this.root.classList.add("loaded");
  }

  show(img) {
    const ctx = this.base.getContext("2d");
    ctx.imageSmoothingEnabled = this.scale < 1; // upscaled small images keep their exact pixels
    ctx.clearRect(0, 0, this.base.width, this.base.height);
    ctx.drawImage(img, 0, 0, this.base.width, this.base.height);
  }

  // pointer event -> [x, y] in image pixels, clamped to the image
  toImage(e) {
    const r = this.overlay.getBoundingClientRect();
    const x = ((e.clientX - r.left) / r.width) * this.imageW;
    const y = ((e.clientY - r.top) / r.height) * this.imageH;
    return [Math.min(Math.max(x, 0), this.imageW - 1), Math.min(Math.max(y, 0), this.imageH - 1)];
  }

  // image pixels per screen pixel (brush sizes are given in screen pixels)
  imagePerScreen() { return this.imageW / this.overlay.getBoundingClientRect().width; }

  _down(e) {
    if (!this.loaded) return;
    e.preventDefault();
    this.overlay.setPointerCapture(e.pointerId);
    const p = this.toImage(e);
    if (this.mode === "brush" && e.button === 0) {
      this.drag = { brush: true, erase: e.shiftKey, last: p };
      this.handlers.onBrush(p, p, this.brushSize * this.imagePerScreen(), e.shiftKey, true);
      return;
    }
    this.drag = { start: p, sx: e.clientX, sy: e.clientY, button: e.button, shift: e.shiftKey, moved: false };
  }

  _move(e) {
    const d = this.drag;
    if (!d) return;
    const p = this.toImage(e);
    if (d.brush) {
      this.handlers.onBrush(d.last, p, this.brushSize * this.imagePerScreen(), d.erase, false);
      d.last = p;
      return;
    }
    if (d.button === 0 && Math.hypot(e.clientX - d.sx, e.clientY - d.sy) > DRAG_THRESHOLD_PX) d.moved = true;
    if (d.moved) {
      d.end = p;
      this.handlers.render();
      const ctx = this.overlay.getContext("2d");
      const s = this.overlay.width / this.imageW;
      const k = pixelRatio(ctx);
      ctx.setLineDash([5 * k, 4 * k]);
      ctx.lineWidth = 2 * k;
      ctx.strokeStyle = "#fff";
      ctx.strokeRect(d.start[0] * s, d.start[1] * s, (p[0] - d.start[0]) * s, (p[1] - d.start[1]) * s);
      ctx.setLineDash([]);
    }
  }

  _up(e) {
    const d = this.drag;
    this.drag = null;
    if (!d) return;
    if (d.brush) { this.handlers.onBrushEnd(); return; }
    if (d.moved && d.end) {
      const [x1, y1] = d.start, [x2, y2] = d.end;
      const box = [Math.min(x1, x2), Math.min(y1, y2), Math.max(x1, x2), Math.max(y1, y2)].map((v) => Math.round(v));
      if (box[2] - box[0] >= 2 && box[3] - box[1] >= 2) this.handlers.onBox(box);
      else this.handlers.render();
      return;
    }
    const positive = d.button === 0 && !d.shift && !e.shiftKey;
    this.handlers.onPoint(d.start.map((v) => Math.round(v)), positive);
  }
}

// ---------------------------------------------------------------------------------------------
// Image tab
// ---------------------------------------------------------------------------------------------
const image = {
  id: null, name: null, img: null, width: 0, height: 0, loading: false,
  regions: [], active: null, nextId: 1,
};

const imageStage = new Stage($("#image-stage"), {
  render: () => renderImageOverlay(),
  onPoint: (p, positive) => {
    let r = image.active;
    if (!r || r.kind === "mask") r = newRegion("points");
    r.prompt.points.push(p);
    r.prompt.labels.push(positive ? 1 : 0);
    updateRegion(r);
  },
  onBox: (box) => {
    const r = newRegion("box");
    r.prompt.box = box;
    updateRegion(r);
  },
  onBrush: (from, to, size, erase, first) => {
    let r = image.active;
    if (!r || r.kind !== "mask") { if (erase) return; r = newRegion("mask"); }
    if (!r.brush) {
      r.brush = document.createElement("canvas");
      r.brush.width = imageStage.overlay.width;
      r.brush.height = imageStage.overlay.height;
    }
    const ctx = r.brush.getContext("2d");
    const s = r.brush.width / image.width;
    ctx.globalCompositeOperation = erase ? "destination-out" : "source-over";
    ctx.strokeStyle = ctx.fillStyle = r.color;
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.lineWidth = Math.max(1, size * s);
    ctx.beginPath();
    if (first) {
      ctx.arc(from[0] * s, from[1] * s, ctx.lineWidth / 2, 0, 2 * Math.PI);
      ctx.fill();
    } else {
      ctx.moveTo(from[0] * s, from[1] * s);
      ctx.lineTo(to[0] * s, to[1] * s);
      ctx.stroke();
    }
    r.brushDirty = true;
    scheduleImageRender();
  },
  onBrushEnd: () => {
    const r = image.active;
    if (r && r.kind === "mask" && r.brushDirty) {
      r.brushDirty = false;
      if (brushIsEmpty(r)) { removeRegion(r); return; }
      updateRegion(r);
    }
  },
});

// pointer moves come faster than frames: repaint at most once per animation frame
let renderPending = false;
function scheduleImageRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => { renderPending = false; renderImageOverlay(); });
}

function newRegion(kind) {
  const id = image.nextId++;
  const r = {
    id, kind, color: COLORS[(id - 1) % COLORS.length],
    prompt: { points: [], labels: [], box: null },
    brush: null, brushDirty: false, mask: null, seg: null, result: null,
    texts: {}, status: "", abort: null,
    timeline: {}, // when the mask, the first token and the result of the last request arrived (ms)
  };
  image.regions.push(r);
  image.active = r;
  renderRegionList();
  return r;
}

function removeRegion(r) {
  if (r.abort) r.abort.abort();
  image.regions = image.regions.filter((x) => x !== r);
  if (image.active === r) image.active = null;
  renderRegionList();
  renderImageOverlay();
}

function brushIsEmpty(r) {
  const d = r.brush.getContext("2d").getImageData(0, 0, r.brush.width, r.brush.height).data;
  for (let i = 3; i < d.length; i += 4) if (d[i]) return false;
  return true;
}

// The brush strokes as a binary PNG at the image's own size (what the API's mask prompt expects).
function brushToDataUri(r) {
  const small = r.brush;
  const src = small.getContext("2d").getImageData(0, 0, small.width, small.height);
  const bin = new ImageData(small.width, small.height);
  for (let i = 0; i < src.data.length; i += 4) {
    const v = src.data[i + 3] > 0 ? 255 : 0;
    bin.data[i] = bin.data[i + 1] = bin.data[i + 2] = v;
    bin.data[i + 3] = 255;
  }
  const tmp = document.createElement("canvas");
  tmp.width = small.width; tmp.height = small.height;
  tmp.getContext("2d").putImageData(bin, 0, 0);
  const full = document.createElement("canvas");
  full.width = image.width; full.height = image.height;
  const ctx = full.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tmp, 0, 0, image.width, image.height);
  return full.toDataURL("image/png");
}

// {box?, points, labels} -> the API's region object (box, points + labels, or both)
function promptPayload(prompt) {
  const p = {};
  if (prompt.box) p.box = prompt.box;
  if (prompt.points.length) { p.points = prompt.points; p.labels = prompt.labels; }
  return p;
}

function regionPayload(r) {
  return r.kind === "mask" ? { mask: brushToDataUri(r) } : promptPayload(r.prompt);
}

function selectedTasks() {
  const tasks = [...document.querySelectorAll("#task-boxes input:checked")].map((el) => el.value);
  if ($("#question").value.trim()) tasks.push("question");
  return tasks;
}

function applySegmentation(r, regionDict) {
  r.seg = regionDict;
  r.mask = regionDict && regionDict.mask_rle ? decodeRle(regionDict.mask_rle) : null;
  r.maskVersion = (r.maskVersion || 0) + 1;
  renderImageOverlay();
}

// A prompt changed: mask at once from /v1/segment, then the texts streamed from /v1/perceive.
async function updateRegion(r) {
  if (!image.id) { showError(new Error(t("no_image"))); return; }
  if (r.abort) r.abort.abort();
  const ctl = new AbortController();
  r.abort = ctl;
  r.result = null;
  r.timeline = { start: performance.now() };
  r.status = t("segmenting");
  renderImageOverlay();
  renderRegionList();
  try {
    const payload = regionPayload(r);
    const res = await api("/v1/segment", { method: "POST", json: { image_id: image.id, regions: [payload] }, signal: ctl.signal });
    const seg = await res.json();
    r.timeline.mask = performance.now();
    applySegmentation(r, seg.regions[0]);
    await describeRegion(r, ctl, payload);
  } catch (err) {
    if (err.name !== "AbortError") { r.status = ""; renderRegionList(); showError(err); }
  }
}

async function describeRegion(r, ctl = null, payload = null) {
  if (!ctl) {
    if (r.abort) r.abort.abort();
    ctl = new AbortController();
    r.abort = ctl;
  }
  const tasks = selectedTasks();
  r.texts = {};
  r.result = null;
  if (!tasks.length) { r.status = ""; renderRegionList(); return; }
  r.status = t("describing");
  renderRegionList();
  const body = { image_id: image.id, regions: [payload || regionPayload(r)], tasks, lang: state.lang, stream: true };
  const question = $("#question").value.trim();
  if (question) body.question = question;
  const res = await api("/v1/perceive", { method: "POST", json: body, signal: ctl.signal });
  for await (const ev of readSSE(res)) {
    if (ev.event === "mask") {
      applySegmentation(r, ev.data.regions[0]);
    } else if (ev.event === "token") {
      if (r.timeline.firstToken === undefined) r.timeline.firstToken = performance.now();
      r.texts[ev.data.task] = (r.texts[ev.data.task] || "") + ev.data.text;
      renderRegionList();
    } else if (ev.event === "result") {
      r.timeline.result = performance.now();
      r.result = ev.data;
      r.resultLang = state.lang;
      applySegmentation(r, ev.data.regions[0]);
    } else if (ev.event === "error") {
      throw sseError(ev.data);
    } else if (ev.event === "done") {
      break;
    }
  }
  if (r.abort === ctl) r.abort = null;
  r.status = "";
  renderRegionList();
  renderImageOverlay();
}

// The text shown for one task output: the parsed field when there is one, else the raw text.
function outputText(o) {
  if (o.task === "label") return o.label || o.text;
  if (o.task === "definition") return o.definition || o.text;
  if (o.task === "question") return o.answer || o.text;
  return o.caption || o.text;
}

function regionLabel(r) {
  const outs = r.result ? r.result.regions[0].outputs : [];
  const o = outs.find((x) => x.label);
  return o ? o.label : null;
}

function promptSummary(r) {
  if (r.kind === "mask") return t("brush");
  const bits = [];
  if (r.prompt.box) bits.push(`${t("box")} [${r.prompt.box.join(", ")}]`);
  if (r.prompt.points.length) {
    const pos = r.prompt.labels.filter((l) => l === 1).length;
    const n = r.prompt.points.length;
    bits.push(`${n} ${t(n === 1 ? "point" : "points")} (+${pos}/−${n - pos})`);
  }
  return bits.join(" + ");
}

function textRows(entries) {
  const dl = document.createElement("dl");
  for (const [key, value] of entries) {
    const dt = document.createElement("dt");
    dt.textContent = t(`task_${key}`);
    const dd = document.createElement("dd");
    dd.textContent = value;
    dd.dataset.task = key;
    dl.append(dt, dd);
  }
  return dl;
}

function renderRegionList() {
  const list = $("#region-list");
  list.replaceChildren();
  image.regions.forEach((r, i) => {
    const li = document.createElement("li");
    li.style.setProperty("--c", r.color);
    li.dataset.region = String(i);
    if (r === image.active) li.classList.add("active");
    const head = document.createElement("div");
    head.className = "head";
    const title = document.createElement("b");
    title.textContent = `${t("region")} ${i + 1}` + (regionLabel(r) ? ` · ${regionLabel(r)}` : "");
    const meta = document.createElement("span");
    meta.className = "meta";
    const seg = r.seg;
    meta.textContent = promptSummary(r) + (seg ? ` · ${t("iou")} ${seg.iou.toFixed(2)} · ${t("area")} ${seg.area}` : "");
    const del = document.createElement("button");
    del.textContent = "×";
    del.title = "remove";
    del.addEventListener("click", (e) => { e.stopPropagation(); removeRegion(r); });
    head.append(title, meta, del);
    li.append(head);
    const entries = r.result
      ? r.result.regions[0].outputs.map((o) => [o.task, outputText(o)])
      : Object.entries(r.texts);
    if (entries.length) li.append(textRows(entries));
    if (r.status) {
      const s = document.createElement("div");
      s.className = "status";
      s.textContent = r.status;
      li.append(s);
    }
    li.addEventListener("click", () => { image.active = r; renderRegionList(); renderImageOverlay(); });
    list.append(li);
  });
}

const maskLayer = { canvas: document.createElement("canvas"), key: "" };

function renderImageOverlay(ctx = imageStage.overlay.getContext("2d"), { prompts = true } = {}) {
  const cv = ctx.canvas;
  ctx.clearRect(0, 0, cv.width, cv.height);
  if (!image.width) return;
  const s = cv.width / image.width;
  // brush strokes of regions not segmented yet, then all masks, then prompts and tags on top
  for (const r of image.regions) {
    if (r.kind === "mask" && r.brush && (!r.mask || r.brushDirty)) {
      ctx.globalAlpha = 0.55;
      ctx.drawImage(r.brush, 0, 0, cv.width, cv.height);
      ctx.globalAlpha = 1;
    }
  }
  const shown = image.regions.filter((r) => r.mask && !r.brushDirty);
  const masks = shown.map((r) => ({ mask: r.mask, color: r.color }));
  if (cv === imageStage.overlay) {
    // on screen the overlay is redrawn on every drag move: keep the painted masks until they change
    const key = `${cv.width}x${cv.height}|${shown.map((r) => `${r.id}:${r.maskVersion}`).join(",")}`;
    if (maskLayer.key !== key) {
      maskLayer.canvas.width = cv.width; // also clears it
      maskLayer.canvas.height = cv.height;
      paintMasks(maskLayer.canvas.getContext("2d", { willReadFrequently: true }), masks, pixelRatio(ctx));
      maskLayer.key = key;
    }
    ctx.drawImage(maskLayer.canvas, 0, 0);
  } else {
    paintMasks(ctx, masks);
  }
  image.regions.forEach((r, i) => {
    if (prompts) drawPrompt(ctx, r.prompt, r.color, s);
    const bbox = r.seg && r.seg.bbox;
    if (bbox) {
      const label = regionLabel(r);
      drawTag(ctx, bbox[0] * s, bbox[1] * s, label ? `${i + 1} ${label}` : `${i + 1}`, r.color);
    }
  });
}

async function loadImageFile(blob, name) {
  clearError();
  const form = new FormData();
  form.append("file", blob, name);
  image.loading = true;
  try {
    const res = await api("/v1/images", { method: "POST", form });
    const info = await res.json();
    const img = await loadImage(URL.createObjectURL(blob));
    // only now is the old image given up: a refused upload leaves the current work as it was
    for (const r of image.regions) if (r.abort) r.abort.abort();
    Object.assign(image, { id: info.image_id, name, img, width: info.width, height: info.height, regions: [], active: null, nextId: 1 });
    imageStage.setSize(info.width, info.height);
    imageStage.show(img);
    renderRegionList();
    renderImageOverlay();
  } catch (err) {
    showError(err);
  } finally {
    image.loading = false;
  }
}

function imageResultJSON() {
  // One ImageResult-shaped object with every region (each described in its own request).
  const first = image.regions.find((r) => r.result || r.seg);
  const model = first && first.result ? first.result.model : (state.model && state.model.id) || "";
  return {
    source: image.name,
    model,
    image_size: { width: image.width, height: image.height },
    lang: state.lang,
    regions: image.regions.map((r, i) => {
      const d = r.result ? r.result.regions[0] : r.seg;
      return { ...(d || {}), index: i, prompt: d ? d.prompt : regionPayload(r), color: r.color };
    }),
  };
}

function setupImageTab() {
  $("#image-file").addEventListener("change", (e) => {
    const f = e.target.files[0];
    if (f) loadImageFile(f, f.name);
    e.target.value = "";
  });
  const setMode = (mode) => {
    imageStage.mode = mode;
    $("#mode-prompt").classList.toggle("active", mode === "prompt");
    $("#mode-brush").classList.toggle("active", mode === "brush");
    $("#image-stage").classList.toggle("brush", mode === "brush");
    if (mode === "brush" && image.active && image.active.kind !== "mask") image.active = null;
  };
  $("#mode-prompt").addEventListener("click", () => setMode("prompt"));
  $("#mode-brush").addEventListener("click", () => setMode("brush"));
  $("#brush-size").addEventListener("input", (e) => { imageStage.brushSize = Number(e.target.value); });
  $("#new-region").addEventListener("click", () => { image.active = null; renderRegionList(); });
  document.addEventListener("keydown", (e) => {
    if (!$("#tab-image").classList.contains("active") || e.target.matches("input[type=text], input[type=number], textarea")) return;
    if (e.key === "Escape") { image.active = null; renderRegionList(); }
    if ((e.key === "Delete" || e.key === "Backspace") && image.active) removeRegion(image.active);
  });
  $("#clear-regions").addEventListener("click", () => {
    for (const r of image.regions) if (r.abort) r.abort.abort();
    Object.assign(image, { regions: [], active: null, nextId: 1 });
    renderRegionList();
    renderImageOverlay();
  });
  const redescribe = () => image.regions.filter((r) => r.seg).forEach((r) => describeRegion(r).catch(showError));
  document.querySelectorAll("#task-boxes input").forEach((el) => el.addEventListener("change", redescribe));
  $("#question").addEventListener("change", redescribe);
  $("#download-json").addEventListener("click", () => {
    if (!image.regions.length) { showError(new Error(t("no_region"))); return; }
    const text = JSON.stringify(imageResultJSON(), null, 2);
    download(`${(image.name || "image").replace(/\.[^.]+$/, "")}.pam.json`, new Blob([text], { type: "application/json" }));
  });
  $("#download-png").addEventListener("click", () => {
    if (!image.img) { showError(new Error(t("no_image"))); return; }
    // at the image's own size (very large photos: at most MAX_EXPORT_SIDE on the long side)
    const k = Math.min(1, MAX_EXPORT_SIDE / Math.max(image.width, image.height));
    const out = document.createElement("canvas");
    out.width = Math.round(image.width * k);
    out.height = Math.round(image.height * k);
    const ctx = out.getContext("2d");
    const masks = document.createElement("canvas");
    masks.width = out.width; masks.height = out.height;
    renderImageOverlay(masks.getContext("2d"), { prompts: false });
    ctx.drawImage(image.img, 0, 0, out.width, out.height);
    ctx.drawImage(masks, 0, 0);
    out.toBlob((blob) => download(`${(image.name || "image").replace(/\.[^.]+$/, "")}.overlay.png`, blob), "image/png");
  });
}

async function setupSamples() {
  try {
    const res = await api("/v1/samples");
    const cat = await res.json();
    const box = $("#sample-list");
    for (const s of cat.samples || []) {
      const img = document.createElement("img");
      img.src = s.url;
      img.alt = s.name;
      img.title = s.name;
      img.dataset.sample = s.name;
      img.addEventListener("click", async () => {
        try {
          const blob = await (await api(s.url)).blob();
          await loadImageFile(blob, s.name);
        } catch (err) { showError(err); }
      });
      box.append(img);
    }
    for (const holder of document.querySelectorAll(".video-samples")) {
      for (const v of cat.videos || []) {
        const b = document.createElement("button");
        b.textContent = t("sample_video");
        b.dataset.i18n = "sample_video";
        b.dataset.sample = v.name;
        b.addEventListener("click", async () => {
          try {
            const blob = await (await api(v.url)).blob();
            const target = holder.closest(".tab").id === "tab-stream" ? stream : video;
            await loadVideoFile(target, blob, v.name);
          } catch (err) { showError(err); }
        });
        holder.append(b);
      }
    }
    state.samplesLoaded = true;
  } catch (err) {
    showError(err);
  }
}

// ---------------------------------------------------------------------------------------------
// Video tab and streaming tab (both: upload, frames from the server, prompts on a frame)
// ---------------------------------------------------------------------------------------------
function makeVideoState(prefix) {
  return { prefix, info: null, frame: 0, shown: null, frames: new Map(), objects: [], result: null, masks: new Map(), nextId: 1 };
}
const video = makeVideoState("video");
const stream = makeVideoState("stream");

function frameImage(v, idx) {
  if (!v.frames.has(idx)) v.frames.set(idx, loadImage(`/v1/videos/${v.info.video_id}/frames/${idx}`));
  return v.frames.get(idx);
}

async function loadVideoFile(v, blob, name) {
  clearError();
  const info = $(`#${v.prefix}-info`);
  info.textContent = t("uploading");
  const form = new FormData();
  form.append("file", blob, name);
  try {
    const res = await api("/v1/videos", { method: "POST", form });
    v.info = await res.json();
    v.name = name;
    Object.assign(v, { frame: 0, frames: new Map(), objects: [], result: null, masks: new Map(), nextId: 1 });
    const stage = v.prefix === "video" ? videoStage : streamStage;
    stage.setSize(v.info.width, v.info.height);
    info.textContent = `${name}: ${v.info.num_frames} ${t("frames")}, ${v.info.width}×${v.info.height}, ${Number(v.info.fps).toFixed(1)} fps`;
    if (v.prefix === "video") {
      const slider = $("#video-frame");
      slider.max = String(Math.max(0, v.info.num_frames - 1));
      slider.value = "0";
      renderObjectList();
    } else {
      $("#event-list").replaceChildren();
    }
    await showVideoFrame(v, 0);
  } catch (err) {
    info.textContent = "";
    showError(err);
  }
}

// processed-frame position of source frame idx in the tracking result (or -1)
function resultPosition(v, idx) {
  return v.result ? v.result.frame_indices.indexOf(idx) : -1;
}

function trackMask(v, objIndex, pos) {
  const key = `${objIndex}:${pos}`;
  if (!v.masks.has(key)) v.masks.set(key, decodeRle(v.result.objects[objIndex].masks_rle[pos]));
  return v.masks.get(key);
}

async function showVideoFrame(v, idx, extra = null) {
  if (!v.info) return;
  v.frame = idx;
  const stage = v.prefix === "video" ? videoStage : streamStage;
  const img = await frameImage(v, idx);
  if (v.frame !== idx) return; // a later frame was asked for meanwhile
  stage.show(img);
  renderVideoOverlay(v, extra);
  v.shown = idx; // frame and its masks are on screen
  if (v.prefix === "video") $("#video-frame-label").textContent = `${t("frame")} ${idx + 1} / ${v.info.num_frames}`;
}

function renderVideoOverlay(v, extra = null) {
  const stage = v.prefix === "video" ? videoStage : streamStage;
  const ctx = stage.overlay.getContext("2d");
  ctx.clearRect(0, 0, stage.overlay.width, stage.overlay.height);
  if (!v.info) return;
  const s = stage.overlay.width / v.info.width;
  const pos = resultPosition(v, v.frame);
  if (pos >= 0) {
    paintMasks(ctx, v.result.objects.map((o, k) => ({ mask: trackMask(v, k, pos), color: v.objects[k] ? v.objects[k].color : COLORS[k % COLORS.length] })));
  }
  v.objects.forEach((o, k) => {
    if (o.frame === v.frame) drawPrompt(ctx, o.prompt, o.color, s);
    if (pos >= 0 && v.result.objects[k]) {
      const m = trackMask(v, k, pos);
      if (v.result.objects[k].object_scores[pos] > 0) {
        const b = maskBox(m);
        if (b) drawTag(ctx, b[0] * s, b[1] * s, `${k + 1}`, o.color);
      }
    }
  });
  if (extra) extra(ctx, s);
}

function maskBox(m) {
  let x1 = Infinity, y1 = Infinity, x2 = -1, y2 = -1;
  for (let col = 0; col < m.w; col++) {
    const base = col * m.h;
    for (let row = 0; row < m.h; row++) {
      if (m.data[base + row]) {
        if (col < x1) x1 = col;
        if (col > x2) x2 = col;
        if (row < y1) y1 = row;
        if (row > y2) y2 = row;
      }
    }
  }
  return x2 < 0 ? null : [x1, y1, x2 + 1, y2 + 1];
}

function videoPayload(o) {
  return { frame: o.frame, ...promptPayload(o.prompt) };
}

function addVideoObject(v, kind) {
  const id = v.nextId++;
  const o = { id, kind, frame: v.frame, color: COLORS[(id - 1) % COLORS.length], prompt: { points: [], labels: [], box: null } };
  v.objects.push(o);
  v.result = null;
  v.masks = new Map();
  return o;
}

const videoStage = new Stage($("#video-stage"), {
  render: () => renderVideoOverlay(video),
  onBox: (box) => {
    const o = addVideoObject(video, "box");
    o.prompt.box = box;
    renderObjectList();
    renderVideoOverlay(video);
  },
  onPoint: (p, positive) => {
    let o = video.objects[video.objects.length - 1];
    if (!o || o.frame !== video.frame || o.prompt.box) o = addVideoObject(video, "points");
    o.prompt.points.push(p);
    o.prompt.labels.push(positive ? 1 : 0);
    video.result = null;
    renderObjectList();
    renderVideoOverlay(video);
  },
  onBrush: () => {}, onBrushEnd: () => {},
});

function renderObjectList() {
  const list = $("#object-list");
  list.replaceChildren();
  video.objects.forEach((o, k) => {
    const li = document.createElement("li");
    li.style.setProperty("--c", o.color);
    li.dataset.object = String(k);
    const head = document.createElement("div");
    head.className = "head";
    const title = document.createElement("b");
    title.textContent = `${t("object")} ${k + 1}`;
    const meta = document.createElement("span");
    meta.className = "meta";
    const bits = [];
    if (o.prompt.box) bits.push(`${t("box")} [${o.prompt.box.join(", ")}]`);
    const n = o.prompt.points.length;
    if (n) bits.push(`${n} ${t(n === 1 ? "point" : "points")}`);
    meta.textContent = `${bits.join(" + ")} · ${t("on_frame")} ${o.frame + 1}`;
    const del = document.createElement("button");
    del.textContent = "×";
    del.addEventListener("click", () => {
      video.objects.splice(k, 1);
      video.result = null;
      video.masks = new Map();
      renderObjectList();
      renderVideoOverlay(video);
    });
    head.append(title, meta, del);
    li.append(head);
    const res = video.result && video.result.objects[k];
    if (res) li.append(textRows(res.outputs.map((o2) => [o2.task, outputText(o2)])));
    list.append(li);
  });
}

let playTimer = null;
function stopPlayback() {
  if (playTimer) clearInterval(playTimer);
  playTimer = null;
  $("#video-play").textContent = t("play");
}

function setupVideoTab() {
  $("#video-file").addEventListener("change", (e) => {
    const f = e.target.files[0];
    if (f) { stopPlayback(); loadVideoFile(video, f, f.name); }
    e.target.value = "";
  });
  $("#video-frame").addEventListener("input", (e) => showVideoFrame(video, Number(e.target.value)).catch(showError));
  $("#video-play").addEventListener("click", () => {
    if (!video.info) { showError(new Error(t("no_video"))); return; }
    if (playTimer) { stopPlayback(); return; }
    // play the processed frames when there is a tracking result, else every frame
    const order = video.result ? video.result.frame_indices : [...Array(video.info.num_frames).keys()];
    let i = Math.max(0, order.indexOf(video.frame));
    const fps = Math.min(30, Math.max(1, Number(video.info.fps) || 8));
    $("#video-play").textContent = t("pause");
    playTimer = setInterval(() => {
      i = (i + 1) % order.length;
      $("#video-frame").value = String(order[i]);
      showVideoFrame(video, order[i]).catch(showError);
    }, 1000 / fps);
  });
  $("#video-clear").addEventListener("click", () => {
    Object.assign(video, { objects: [], result: null, masks: new Map(), nextId: 1 });
    renderObjectList();
    renderVideoOverlay(video);
  });
  $("#video-run").addEventListener("click", async () => {
    if (!video.info) { showError(new Error(t("no_video"))); return; }
    if (!video.objects.length) { showError(new Error(t("no_object"))); return; }
    clearError();
    stopPlayback();
    const btn = $("#video-run");
    btn.disabled = true;
    $("#video-status").textContent = t("tracking");
    try {
      const body = { video_id: video.info.video_id, objects: video.objects.map(videoPayload), tasks: ["video_caption"], lang: state.lang };
      // frames spread evenly over the video (the official notebooks use 32); prompts move to the nearest one
      const count = $("#video-num-frames").value.trim();
      if (count) body.num_frames = Number(count);
      const res = await api("/v1/perceive_video", { method: "POST", json: body });
      video.result = await res.json();
      video.resultLang = state.lang;
      video.masks = new Map();
      const n = video.result.frame_indices.length;
      $("#video-status").textContent = `${t("done")}: ${n} ${t("frames")}, ${video.result.timings.total.toFixed(1)} s`;
      renderObjectList();
      await showVideoFrame(video, video.frame);
    } catch (err) {
      $("#video-status").textContent = "";
      showError(err);
    } finally {
      btn.disabled = false;
    }
  });
  $("#video-json").addEventListener("click", () => {
    if (!video.result) { showError(new Error(t("no_object"))); return; }
    download(`${(video.name || "video").replace(/\.[^.]+$/, "")}.pam.json`, new Blob([JSON.stringify(video.result, null, 2)], { type: "application/json" }));
  });
}

// Streaming tab: one box on the first frame, caption events appear as each clip finishes.
const streamStage = new Stage($("#stream-stage"), {
  render: () => renderVideoOverlay(stream),
  onBox: (box) => {
    stream.objects = [];
    const o = addVideoObject(stream, "box");
    o.prompt.box = box;
    renderVideoOverlay(stream);
  },
  onPoint: (p, positive) => {
    let o = stream.objects[0];
    if (!o || o.prompt.box) { stream.objects = []; o = addVideoObject(stream, "points"); }
    o.prompt.points.push(p);
    o.prompt.labels.push(positive ? 1 : 0);
    renderVideoOverlay(stream);
  },
  onBrush: () => {}, onBrushEnd: () => {},
});
let streamAbort = null;

function addCaptionEvent(ev) {
  const li = document.createElement("li");
  li.dataset.clip = String(ev.clip);
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = `${t("clip_n")} ${ev.clip + 1} · ${ev.start_time.toFixed(2)}–${ev.end_time.toFixed(2)} s · ${t("frames")} ${ev.start_frame}–${ev.end_frame}`;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = ev.present ? ev.text : `${ev.text || ""} (${t("absent")})`.trim();
  li.append(time, text);
  $("#event-list").append(li);
}

function setupStreamTab() {
  $("#stream-file").addEventListener("change", (e) => {
    const f = e.target.files[0];
    if (f) loadVideoFile(stream, f, f.name);
    e.target.value = "";
  });
  $("#stream-stop").addEventListener("click", () => { if (streamAbort) streamAbort.abort(); });
  $("#stream-start").addEventListener("click", async () => {
    if (!stream.info) { showError(new Error(t("no_video"))); return; }
    const o = stream.objects[0];
    if (!o) { showError(new Error(t("no_object"))); return; }
    clearError();
    if (streamAbort) streamAbort.abort();
    const ctl = new AbortController();
    streamAbort = ctl;
    $("#event-list").replaceChildren();
    $("#stream-info").textContent = t("streaming");
    const region = promptPayload(o.prompt);
    const clipText = $("#stream-clip").value.trim();
    const clip = /^\d+$/.test(clipText) ? Number(clipText) : clipText;
    try {
      const res = await api("/v1/stream", { method: "POST", json: { video_id: stream.info.video_id, region, clip, lang: state.lang }, signal: ctl.signal });
      for await (const ev of readSSE(res)) {
        if (ev.event === "caption") {
          addCaptionEvent(ev.data);
          const box = ev.data.last_box;
          // show where the object was at the end of the clip
          showVideoFrame(stream, ev.data.end_frame, box ? (ctx, s) => {
            ctx.lineWidth = 3;
            ctx.strokeStyle = o.color;
            ctx.strokeRect(box[0] * s, box[1] * s, (box[2] - box[0]) * s, (box[3] - box[1]) * s);
          } : null).catch(showError);
        } else if (ev.event === "error") {
          throw sseError(ev.data);
        } else if (ev.event === "done") {
          break;
        }
      }
      $("#stream-info").textContent = t("finished");
    } catch (err) {
      $("#stream-info").textContent = err.name === "AbortError" ? t("stopped") : "";
      showError(err);
    } finally {
      if (streamAbort === ctl) streamAbort = null;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Page: tabs, language, model line
// ---------------------------------------------------------------------------------------------
function applyLanguage() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
  $("#lang-en").classList.toggle("active", state.lang === "en");
  $("#lang-zh").classList.toggle("active", state.lang === "zh");
  if (!playTimer) $("#video-play").textContent = t("play");
  renderModelLine();
  renderRegionList();
  renderObjectList();
}

function setLanguage(lang) {
  if (lang === state.lang) return;
  state.lang = lang;
  applyLanguage();
  // the texts are model output in one language: ask again in the new one (the mask stays)
  image.regions.filter((r) => r.seg).forEach((r) => describeRegion(r).catch(showError));
}

function renderModelLine() {
  const line = $("#model-line");
  const m = state.model;
  if (!m) return;
  line.replaceChildren();
  line.append(`${t("model")}: ${m.id} · ${m.device} · ${m.dtype}`);
  if (m.embedded) {
    const note = document.createElement("span");
    note.className = "note";
    note.textContent = ` — ${t("embedded_note")}`;
    line.append(note);
  }
}

async function setupModelLine() {
  try {
    const res = await api("/v1/models");
    const body = await res.json();
    state.model = body.data[0];
    renderModelLine();
  } catch (err) {
    $("#model-line").textContent = "";
    showError(err);
  }
}

function setupPage() {
  document.querySelectorAll(".tabs button").forEach((b) => b.addEventListener("click", () => {
    document.querySelectorAll(".tabs button").forEach((x) => x.classList.toggle("active", x === b));
    document.querySelectorAll(".tab").forEach((s) => s.classList.toggle("active", s.id === `tab-${b.dataset.tab}`));
    if (b.dataset.tab !== "video") stopPlayback();
  }));
  $("#lang-en").addEventListener("click", () => setLanguage("en"));
  $("#lang-zh").addEventListener("click", () => setLanguage("zh"));
  $("#error-close").addEventListener("click", clearError);
  setupImageTab();
  setupVideoTab();
  setupStreamTab();
  applyLanguage();
  Promise.all([setupModelLine(), setupSamples()]).then(() => {
    // a newcomer's first look: a scene ready to click on (the embedded model knows only these)
    const first = $("#sample-list img");
    if (first && !image.id && !image.loading && state.model && state.model.embedded) first.click();
  });
}

setupPage();
// exposed for tests and for poking around in the console
window.pam = { image, video, stream, state, decodeRle, rleCounts };
