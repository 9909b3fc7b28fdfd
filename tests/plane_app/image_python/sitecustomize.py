"""The image's own start-up hook (on the image's PYTHONPATH): plane-guard must chain to it, not hide it."""

import os

IMAGE_HOOK_RAN = True

_markers = os.environ.get("PLANE_FAKE_MARKERS")
if _markers:
    with open(_markers, "a", encoding="utf-8") as _file:
        _file.write(f"image-sitecustomize pid={os.getpid()}\n")
