"""Synthetic world: determinism, ground truth sanity, motion, branching futures."""
import numpy as np
import pytest

from deltaworld_core.data.synthetic import (CLASS_NAMES, SyntheticClipDataset, SyntheticWorld,
                                            branch_variants)

SIZE = (64, 96)


@pytest.fixture(scope="module")
def clip():
    return SyntheticWorld(3, SIZE).render_clip(4, 10.0)


def test_shapes_and_determinism(clip):
    assert clip["frames"].shape == (4, *SIZE, 3) and clip["frames"].dtype == np.uint8
    assert clip["semantic"].shape == (4, *SIZE) and clip["semantic"].dtype == np.uint8
    assert clip["depth"].dtype == np.float32 and clip["stamps"].dtype == np.float64
    again = SyntheticWorld(3, SIZE).render_clip(4, 10.0)
    for k in ("frames", "semantic", "depth", "stamps"):
        np.testing.assert_array_equal(clip[k], again[k])
    other = SyntheticWorld(4, SIZE).render_clip(4, 10.0)
    assert not np.array_equal(clip["frames"], other["frames"])


def test_depth_and_labels(clip):
    d, s = clip["depth"], clip["semantic"]
    assert np.isfinite(d).all() and (d > 0).all() and d.max() <= 80.0
    sky = s == CLASS_NAMES.index("sky")
    assert np.all(d[sky] == 80.0) and np.all(d[~sky] < 80.0)
    assert s.max() < len(CLASS_NAMES)
    # Ground below the horizon is nearer at the bottom row than mid-image.
    assert d[0, -1].mean() < d[0, SIZE[0] // 2 + 4].mean()


def test_class_coverage():
    seen = np.zeros(len(CLASS_NAMES), bool)
    for seed in range(3):
        s = SyntheticWorld(seed, (96, 128)).render_clip(1, 10.0)["semantic"]
        seen[np.unique(s)] = True
    assert seen.all(), [n for n, ok in zip(CLASS_NAMES, seen) if not ok]


def test_camera_moves(clip):
    f = clip["frames"].astype(np.int16)
    assert np.abs(f[1] - f[0]).mean() > 1.0
    assert not np.array_equal(clip["depth"][0], clip["depth"][1])


def test_branching_same_past_different_future():
    v = branch_variants(5, num_frames=8, fps=5.0, choices=(0, 1, 2, 3), image_size=(96, 128))
    b = v[0]["branch_frame"]
    assert 0 < b < 8 and all(x["branch_frame"] == b for x in v)
    for other in v[1:]:
        np.testing.assert_array_equal(v[0]["frames"][:b], other["frames"][:b])
        np.testing.assert_array_equal(v[0]["semantic"][:b], other["semantic"][:b])
    futures = [x["semantic"][-1] for x in v]
    n_distinct = len({f.tobytes() for f in futures})
    assert n_distinct >= 3
    assert not np.array_equal(v[0]["frames"][-1], v[1]["frames"][-1])


def test_dataset_seeds_and_gaps():
    train = SyntheticClipDataset(range(0, 10), num_frames=3, fps=None, image_size=(32, 48))
    held = SyntheticClipDataset(range(100, 110), num_frames=3, fps=None, image_size=(32, 48))
    a, b = train[2], train[2]
    np.testing.assert_array_equal(a["frames"], b["frames"])
    gaps = np.diff(a["stamps"])
    assert np.all(gaps >= 1 / 25 - 1e-9) and np.all(gaps <= 1 / 3 + 1e-9)
    assert not set(train.seeds) & set(held.seeds)
    assert not np.array_equal(train[0]["frames"], held[0]["frames"])
