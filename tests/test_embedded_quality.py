"""The shipped tiny-shapes model, measured on shapes-world data generated fresh for this test.

Held-out seeds (``heldout_seed`` with tags of their own) are never drawn in training. The bars are
looser than the targets that ``benchmarks/tiny_model.py`` measures on larger samples (see the README's
results): a CI sample is small, and the bars must flag a broken model or pipeline, not sampling noise.
"""

import numpy as np
import pytest

from perceive_anything.checkpoints import embedded_model_dir
from perceive_anything.training.eval_segmentation import binary_iou
from perceive_anything.training.synthetic import first_color_word

pytestmark = pytest.mark.skipif(embedded_model_dir() is None, reason="no embedded model in this checkout")

MASK_IOU_BAR = 0.75
TRACK_IOU_BAR = 0.6
VIDEO_COLOUR_BAR = 0.7
EXIT_PRESENT_BAR = 0.9
EXIT_ABSENT_BAR = 0.6


@pytest.fixture(scope="module")
def pam():
    from perceive_anything import PerceiveAnything

    return PerceiveAnything.from_pretrained()


def test_masks_of_fresh_scenes(pam):
    from perceive_anything.training.language import heldout_seed
    from perceive_anything.training.synthetic import generate_scene

    ious = []
    for i in range(10):
        scene = generate_scene(heldout_seed(i, "ci-quality-scene"), size=256)
        result = pam.perceive(scene.image, [list(o.box) for o in scene.objects], task="label", max_new_tokens=1)
        ious += [binary_iou(region.mask, obj.mask) for obj, region in zip(scene.objects, result.regions)]
    assert len(ious) >= 20
    assert np.mean(ious) >= MASK_IOU_BAR, f"mean box-prompt mask IoU {np.mean(ious):.3f}"


def test_each_prompt_gets_its_own_object(pam):
    """The failure of a segmenter that ignores its prompt is one "foreground" mask for every box;
    here every predicted mask must match its own object better than any other object of the scene."""
    from perceive_anything.training.language import heldout_seed
    from perceive_anything.training.synthetic import generate_scene

    hits, n = 0, 0
    for i in range(6):
        scene = generate_scene(heldout_seed(i, "ci-quality-pair"), size=256, num_objects=(3, 5))
        result = pam.perceive(scene.image, [list(o.box) for o in scene.objects], task="label", max_new_tokens=1)
        for k, region in enumerate(result.regions):
            scores = [binary_iou(region.mask, o.mask) for o in scene.objects]
            hits += int(np.argmax(scores) == k)
            n += 1
    assert hits / n >= 0.9, f"{hits}/{n} masks matched their own object best"


def _assert_names_colours(said: list, truth: list, bar: float, margin: float) -> None:
    right = np.mean([a == b for a, b in zip(said, truth)])
    shuffled = np.mean([a == b for a, b in zip(said, truth[5:] + truth[:5])])
    assert right >= bar and right >= shuffled + margin, (right, shuffled, list(zip(said, truth)))


def test_brief_captions_name_the_regions_colour(pam):
    """The language side reads the region: the first colour word of each brief caption is the
    prompted object's colour, far more often than it is the colour of another object."""
    from perceive_anything.training.language import heldout_seed
    from perceive_anything.training.synthetic import generate_scene

    said, truth = [], []
    for i in range(8):
        scene = generate_scene(heldout_seed(i, "ci-quality-colour"), size=256)
        result = pam.perceive(scene.image, [list(o.box) for o in scene.objects], task="brief_caption",
                              lang="en", max_new_tokens=24)
        for obj, region in zip(scene.objects, result.regions):
            said.append(first_color_word(region.caption))
            truth.append(obj.color)
    assert len(said) >= 16
    _assert_names_colours(said, truth, 0.7, 0.4)


def test_video_captions_name_the_tracked_objects_colour(pam):
    """Video captions are about the prompted object too: their first colour word is the object's
    colour on frame 0 far more often than another object's."""
    from perceive_anything.training.language import heldout_seed
    from perceive_anything.training.synthetic import generate_video

    said, truth = [], []
    for i in range(6):
        video = generate_video(heldout_seed(i, "ci-quality-video-colour"), num_frames=16, size=256)
        result = pam.perceive_video([np.asarray(f) for f in video.frames], [list(o.boxes[0]) for o in video.objects],
                                    task="video_caption", lang="en", max_new_tokens=24)
        for obj, tracked in zip(video.objects, result.objects):
            said.append(first_color_word(tracked.caption))
            truth.append(obj.color)
    assert len(said) >= 10
    _assert_names_colours(said, truth, VIDEO_COLOUR_BAR, 0.4)


def test_tracks_moving_objects(pam):
    """Objects that slide, bounce, spin, grow or leave: the tracked mask follows each one on every
    frame where it is well inside the view (box prompt on frame 0 only)."""
    from perceive_anything.training.language import heldout_seed
    from perceive_anything.training.synthetic import generate_video

    ious = []
    for i in range(3):
        video = generate_video(heldout_seed(i, "ci-quality-track"), num_frames=24, size=256, num_objects=(2, 3),
                               motions=("slide", "bounce", "rotate", "grow", "exit"))
        result = pam.perceive_video([np.asarray(f) for f in video.frames], [list(o.boxes[0]) for o in video.objects],
                                    task="video_caption", max_new_tokens=1)
        for obj, tracked in zip(video.objects, result.objects):
            area0 = obj.masks[0].sum()
            ious += [binary_iou(tracked.mask(t), obj.masks[t]) for t in range(1, len(video.frames))
                     if obj.masks[t].sum() >= 0.8 * area0]
    assert len(ious) >= 40
    assert np.mean(ious) >= TRACK_IOU_BAR, f"tracking IoU {np.mean(ious):.3f}"


def test_object_leaving_the_view_is_reported_absent(pam):
    """An object that leaves the frame: present (score > 0) while it is well inside, absent (score < 0,
    empty mask) on most frames after it has gone. (The benchmark measures 79 % absent on its larger
    sample; the misses are frames where the track has jumped onto another object, which the object
    score rightly calls present. The model before the recipe's exit-head phase: 0 %.)"""
    from perceive_anything.training.eval_segmentation import evaluate_exits

    ex = evaluate_exits(pam, n_videos=10, seed=11)
    assert ex["frames_inside"] >= 40 and ex["frames_after"] >= 40, ex
    assert ex["present_rate"] >= EXIT_PRESENT_BAR, ex
    assert ex["absent_rate"] >= EXIT_ABSENT_BAR, ex
