"""Streaming thousands of frames keeps resident memory flat (frames are generated on the fly)."""

import numpy as np
import pytest


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status on this platform")


def _frames(n, size=64):
    yy, xx = np.mgrid[0:size, 0:size]
    bg = ((xx * 3 + yy * 5) % 64 + 96).astype(np.uint8)
    for i in range(n):
        f = np.stack([bg, bg[::-1], bg.T], -1).copy()
        cx = int(size / 2 + size / 3 * np.sin(i / 40))
        f[24:40, max(0, cx - 8) : cx + 8] = (220, 40, 40)
        yield f


@pytest.mark.parametrize("carry_memory", [False, True])
def test_memory_does_not_grow_with_the_number_of_frames(tiny_pam, carry_memory):
    n, clip = 2000, 200
    seen = 0

    def count(pos, frame, masks):
        nonlocal seen
        seen += 1

    rss = []
    for ev in tiny_pam.perceive_stream(_frames(n), [[16, 16, 48, 48]], clip=clip, carry_memory=carry_memory,
                                       on_frame=count, max_new_tokens=4):
        rss.append(_rss_mb())
    assert seen == n and len(rss) == n // clip
    # after two clips everything that is ever allocated has been allocated once
    growth = rss[-1] - rss[1]
    assert growth < 20, f"resident memory grew by {growth:.1f} MB over {n} frames: {[round(x) for x in rss]}"
