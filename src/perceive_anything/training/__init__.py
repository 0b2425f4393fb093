"""Training support: the synthetic shapes world and the PAM-data training format.

``synthetic`` generates deterministic annotated scenes / videos / streams; ``data`` reads and
writes the official PAM-data JSON(L)/YAML training format (reference §10.1).
"""

from .data import (
    IMAGE_TOKEN,
    TASK_PROMPTS,
    PamDataError,
    TrainingSample,
    apply_sampling_strategy,
    choose_visual_prompt,
    load_pam_records,
    parse_record,
    read_pam_file,
    video_caption_prompt,
    write_pam_records,
)

_SYNTHETIC_NAMES = frozenset({
    "Event", "Scene", "SceneObject", "VideoObject", "VideoSample", "format_label_definition",
    "generate_scene", "generate_stream", "generate_video",
})


def __getattr__(name: str):
    # Lazy: importing ``synthetic`` here eagerly would make ``python -m
    # perceive_anything.training.synthetic`` load the module twice (runpy warning, and two distinct
    # copies of its dataclasses).
    if name in _SYNTHETIC_NAMES:
        from . import synthetic
        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "IMAGE_TOKEN", "TASK_PROMPTS", "PamDataError", "TrainingSample", "apply_sampling_strategy",
    "choose_visual_prompt", "load_pam_records", "parse_record", "read_pam_file", "video_caption_prompt",
    "write_pam_records",
    "Event", "Scene", "SceneObject", "VideoObject", "VideoSample", "format_label_definition",
    "generate_scene", "generate_stream", "generate_video",
]
