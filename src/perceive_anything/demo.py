"""``pam demo``: an offline tour with the embedded tiny model.

Generates a shapes-world scene and a short video (the world the tiny model was trained on, so its
answers are meaningful), runs :meth:`PerceiveAnything.perceive` on several regions (label + brief
caption) and :meth:`PerceiveAnything.perceive_video` on the video, prints one JSON object (with
the ground truth next to the predictions) and writes overlays (PNG + mp4) to ``--out``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MISSING_MODEL = (
    "the embedded tiny model is missing from this installation (src/perceive_anything/assets/tiny-shapes). "
    "Create it with:  pam train --recipe shapes --out src/perceive_anything/assets/tiny-shapes  "
    "(about 73 minutes on 2 CPU cores with --threads 2), or pass --model DIR"
)


def run_demo(args) -> int:
    import numpy as np
    from PIL import Image

    from . import PerceiveAnything
    from .checkpoints import embedded_model_dir
    from .training.language import heldout_seed
    from .training.synthetic import generate_scene, generate_video

    if args.model is None and embedded_model_dir() is None:
        from .cli import CliError

        raise CliError(MISSING_MODEL)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda m: None) if args.quiet else (lambda m: print(f"[pam demo] {m}", file=sys.stderr, flush=True))
    pam = PerceiveAnything.from_pretrained(args.model, device=args.device, progress=not args.quiet)

    # odd seeds: never seen in training (training.language.heldout_seed)
    scene = generate_scene(heldout_seed(args.seed, "demo-scene"), size=256, num_objects=(3, 5))
    scene_path = out / "scene.png"
    Image.fromarray(scene.image).save(scene_path)
    boxes = [list(o.box) for o in scene.objects]
    say(f"scene with {len(boxes)} objects -> perceive(label, brief_caption)")
    image_result = pam.perceive(scene.image, boxes, task=["label", "brief_caption"], lang=args.lang, max_new_tokens=64)
    image_result.source = str(scene_path)
    overlay = out / "scene_overlay.png"
    image_result.draw(Image.fromarray(scene.image)).save(overlay)
    lang = "zh" if args.lang.lower() in ("zh", "ch", "cn") else "en"
    report = {
        "model": pam.name,
        "image": {
            "file": str(scene_path),
            "overlay": str(overlay),
            "regions": [
                {"box": boxes[i], "label": r.label, "caption": r.caption, "mask_area": int(r.mask.sum()),
                 "truth": {"label": scene.objects[i].label[lang], "caption": scene.objects[i].brief_caption[lang]}}
                for i, r in enumerate(image_result.regions)
            ],
        },
    }

    if not args.no_video:
        from .processing.video import VideoWriter, open_video
        from .visualize import write_video_overlay

        video = generate_video(heldout_seed(args.seed, "demo-video"), num_frames=16, size=256, num_objects=(2, 3))
        video_path = out / "video.mp4"
        with VideoWriter(video_path, fps=8) as writer:
            for frame in video.frames:
                writer.write(frame)
        frames = [np.asarray(f) for f in video.frames]
        vboxes = [list(o.boxes[0]) for o in video.objects]
        say(f"video of {len(frames)} frames, {len(vboxes)} objects -> perceive_video(video_caption)")
        vres = pam.perceive_video(frames, vboxes, task="video_caption", lang=args.lang, max_new_tokens=64)
        voverlay = out / "video_overlay.mp4"
        write_video_overlay(open_video(frames, fps=8), vres, voverlay, fps=8)
        report["video"] = {
            "file": str(video_path),
            "overlay": str(voverlay),
            "objects": [
                {"box": vboxes[i], "caption": o.caption,
                 "truth": video.objects[i].events[0].caption[lang]}
                for i, o in enumerate(vres.objects)
            ],
        }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    say(f"overlays written to {out}")
    return 0
