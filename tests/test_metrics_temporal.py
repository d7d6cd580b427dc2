"""Warping error (Lai et al. 2018) with source-video flow, and frame difference."""

import numpy as np
import pytest
import skimage.data

from loraedit.metrics.temporal import frame_difference, optical_flow, valid_mask, warp, warping_error

T, H, W = 7, 64, 80


@pytest.fixture(scope="module")
def pan():
    """A window moving 3 px right per frame over a real photo."""
    photo = skimage.data.chelsea()[60:200, 40:300]
    return np.stack([photo[30 : 30 + H, 20 + 3 * t : 20 + 3 * t + W] for t in range(T)])


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_flow_recovers_the_pan(pan, method):
    flow = optical_flow(pan[0], pan[1], method)  # content moves 3 px left between frames
    inner = flow[16:-16, 16:-16]
    assert np.median(inner[..., 0]) == pytest.approx(-3.0, abs=0.3)
    assert np.median(inner[..., 1]) == pytest.approx(0.0, abs=0.3)


def test_warping_frame_t_back_matches_frame_t_minus_1(pan):
    fw = optical_flow(pan[0], pan[1])
    warped = warp(pan[1], fw).astype(float)
    keep = valid_mask(fw, optical_flow(pan[1], pan[0]))
    err_warped = np.abs(warped - pan[0])[keep].mean()
    err_raw = np.abs(pan[1].astype(float) - pan[0])[keep].mean()
    assert err_warped < 0.25 * err_raw
    # The 3 px strip leaving on the left has no match in frame t: it must be masked out.
    assert not keep[:, :2].any() and keep.mean() > 0.7


def test_warping_error_orders_consistent_flickering_and_shuffled(pan):
    same = warping_error(pan, pan)
    flicker = pan.astype(np.int16)
    flicker[1::2] += 40  # brightness flicker on every other frame
    flicker = np.clip(flicker, 0, 255).astype(np.uint8)
    shuffled = pan[[3, 6, 1, 5, 0, 4, 2]]
    e_flicker, e_shuffled = warping_error(flicker, pan), warping_error(shuffled, pan)
    assert same < 2e-3
    assert e_flicker > 5 * same and e_shuffled > 5 * same


def test_frame_difference():
    still = np.repeat(np.full((1, 8, 8, 3), 100, np.uint8), 4, axis=0)
    assert frame_difference(still) == 0.0
    ramp = np.stack([np.full((8, 8, 3), 10 * t, np.uint8) for t in range(4)])
    assert frame_difference(ramp) == pytest.approx(10.0)
    assert np.isnan(frame_difference(still[:1]))
