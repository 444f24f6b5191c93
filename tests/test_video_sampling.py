"""Frame sampling and test-time crops against the original pipeline (``../shared/reference/sampling.json``)."""
import json

import numpy as np
import pytest

from sts3d.data.sampling import sample_frame_indices
from sts3d.data.transforms import (center_crop_box, random_resized_crop_box, resize_frames, short_side_size,
                                   three_crop_boxes)
from reference import reference_path

REFERENCE = json.loads(reference_path("sampling.json").read_text())


@pytest.mark.parametrize("case", REFERENCE["sample_frames"],
                         ids=lambda c: f"N{c['total_frames']}-{c['clip_len']}x{c['frame_interval']}x{c['num_clips']}")
def test_test_time_frame_indices_equal_the_originals(case):
    indices = sample_frame_indices(case["total_frames"], case["clip_len"], case["frame_interval"],
                                   case["num_clips"], test_mode=case["test_mode"])
    assert indices.tolist() == case["frame_inds"]


@pytest.mark.parametrize("case", REFERENCE["three_crop"], ids=lambda c: f"{c['img_shape']}-{c['crop_size']}")
def test_three_crop_boxes_equal_the_originals(case):
    assert [list(b) for b in three_crop_boxes(tuple(case["img_shape"]), case["crop_size"])] == case["crop_bboxes"]


@pytest.mark.parametrize("case", REFERENCE["center_crop"], ids=lambda c: f"{c['img_shape']}-{c['crop_size']}")
def test_center_crop_box_equals_the_originals(case):
    assert list(center_crop_box(tuple(case["img_shape"]), case["crop_size"])) == case["crop_bbox"]


@pytest.mark.parametrize("case", REFERENCE["resize_short_side"], ids=lambda c: f"{c['in_shape']}-{c['short_side']}")
def test_short_side_sizes_equal_the_originals(case):
    assert list(short_side_size(*case["in_shape"], case["short_side"])) == case["out_shape"]


def test_train_sampling_stays_in_range_and_keeps_clip_structure():
    rng = np.random.default_rng(0)
    for total in (3, 40, 64, 65, 300):
        for clip_len, interval, clips in ((32, 2, 1), (8, 8, 2), (1, 1, 8)):
            indices = sample_frame_indices(total, clip_len, interval, clips, rng=rng).reshape(clips, clip_len)
            assert indices.min() >= 0 and indices.max() < total
            if total >= clip_len * interval:  # no wrap: frames step by the interval
                assert (np.diff(indices, axis=1) == interval).all()


def test_three_crop_needs_a_side_equal_to_the_crop():
    with pytest.raises(ValueError, match="resize the short side to 224"):
        three_crop_boxes((256, 340), 224)


def test_random_resized_crop_box_fits_and_covers_the_area_range():
    rng = np.random.default_rng(1)
    fractions = []
    for _ in range(300):
        x1, y1, x2, y2 = random_resized_crop_box((240, 320), rng)
        assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240
        fractions.append((x2 - x1) * (y2 - y1) / (240 * 320))
    assert min(fractions) < 0.2 and max(fractions) > 0.7


def test_resize_is_opencv_bilinear_on_uint8():
    frames = np.random.default_rng(2).integers(0, 256, (2, 30, 40, 3), dtype=np.uint8)
    out = resize_frames(frames, (15, 20))
    assert out.shape == (2, 15, 20, 3) and out.dtype == np.uint8
    import cv2
    assert np.array_equal(out[1], cv2.resize(frames[1], (20, 15), interpolation=cv2.INTER_LINEAR))


# The four branches of mmaction2 0.20's SampleFrames._get_train_clips (keep_tail_frames=False), in their order, and
# _get_test_clips on a video shorter than a clip; indices loop modulo the frame count (out_of_bound_opt='loop').

def test_train_clips_one_random_start_per_equal_segment():
    # avg = (N - span + 1) // K > 0: clip k starts at k * avg + randint(avg) (SSv2: one frame per segment)
    rng = np.random.default_rng(3)
    starts = np.stack([sample_frame_indices(100, 1, 1, 8, rng=rng) for _ in range(400)])
    assert (starts // 12 == np.arange(8)).all()  # avg = 100 // 8 = 12; the last 4 frames are never drawn
    assert set(np.unique(starts % 12)) == set(range(12))


def test_train_clips_sorted_random_starts_when_segments_are_empty():
    # avg == 0 but N > max(K, span): K sorted starts drawn from [0, N - span]
    rng = np.random.default_rng(4)
    for _ in range(50):
        starts = sample_frame_indices(75, 8, 8, 20, rng=rng).reshape(20, 8)[:, 0]
        assert (np.diff(starts) >= 0).all() and starts.min() >= 0 and starts.max() <= 75 - 64


def test_train_clips_rounded_even_spread_on_a_video_shorter_than_its_segments():
    # avg == 0 and N <= max(K, span): starts np.around(k * (N - span + 1) / K), round half to even (2.5 -> 2)
    assert sample_frame_indices(5, 1, 1, 8, rng=np.random.default_rng(0)).tolist() == [0, 1, 1, 2, 2, 3, 4, 4]


def test_clips_of_a_video_shorter_than_a_clip_start_at_zero_and_loop():
    # avg < 0 (train) and N <= span - 1 (test): every clip starts at 0; frames past the end wrap around
    expected = [i % 40 for i in range(0, 64, 2)]
    assert sample_frame_indices(40, 32, 2, 1, rng=np.random.default_rng(0)).tolist() == expected
    assert sample_frame_indices(40, 32, 2, 3, test_mode=True).tolist() == expected * 3


def test_test_segments_take_the_middle_frame_of_each():
    # SSv2 test: avg = N / K, start int(avg * k + avg / 2)
    assert sample_frame_indices(50, 1, 1, 8, test_mode=True).tolist() == [3, 9, 15, 21, 28, 34, 40, 46]
