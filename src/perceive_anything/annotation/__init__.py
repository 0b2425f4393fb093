"""Dataset annotation with PAM (extra ``annotation``: Ray Data for scale-out, supervision for exports).

``pam annotate`` / :func:`annotate` turn a folder, a list of paths or a COCO JSON of prompts into one
JSON record per item, resumably, in one process or on a Ray cluster. Only the Ray path and
:func:`load_detections` need the extra; the rest runs with the base install.
"""

from .exports import coco_from_records, load_detections
from .inputs import InputError, Item, discover
from .pipeline import Annotator, Settings
from .runner import Summary, annotate
from .store import OutputStore, SettingsMismatch

__all__ = ["Annotator", "InputError", "Item", "OutputStore", "Settings", "SettingsMismatch", "Summary",
           "annotate", "coco_from_records", "discover", "load_detections"]
