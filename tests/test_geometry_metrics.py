"""AEE and Fl-all on hand-computed cases (motion_rcnn_d2.geometry.metrics)."""
import math

import pytest
import torch

from motion_rcnn_d2.geometry import flow_error_sums, flow_metrics, flow_metrics_from_sums


def _field(vectors):
    """2x2 flow field from [[(u, v), (u, v)], [(u, v), (u, v)]] -> (1, 2, 2, 2)."""
    return torch.tensor(vectors, dtype=torch.float32).permute(2, 0, 1)[None]


# ground truth and the chosen error per pixel (EPE in brackets)
GT = _field([[(100.0, 0.0), (0.0, 0.0)], [(3.0, 4.0), (10.0, 0.0)]])
ERR = _field([[(4.0, 0.0), (3.0, 4.0)], [(0.0, 2.0), (0.0, -3.5)]])
# (0,0): EPE 4 on |gt| 100 -> not an outlier (4 > 3 but 4 < 5% of 100 = 5)
# (0,1): EPE 5 on |gt| 0   -> outlier
# (1,0): EPE 2 on |gt| 5   -> not an outlier (2 < 3)
# (1,1): EPE 3.5 on |gt| 10 -> outlier (3.5 > 3 and 3.5 > 0.5)


def test_hand_computed_all_valid():
    valid = torch.ones(1, 2, 2, dtype=torch.bool)
    sums = flow_error_sums(GT + ERR, GT, valid)
    assert float(sums["epe_sum"]) == pytest.approx(14.5)
    assert int(sums["outliers"]) == 2 and int(sums["count"]) == 4
    m = flow_metrics(GT + ERR, GT, valid)
    assert m == {"aee": pytest.approx(14.5 / 4), "fl_all": pytest.approx(0.5), "count": 4}


def test_hand_computed_with_invalid_pixel():
    valid = torch.tensor([[[True, True], [True, False]]])
    m = flow_metrics(GT + ERR, GT, valid)
    assert m == {"aee": pytest.approx(11.0 / 3), "fl_all": pytest.approx(1.0 / 3), "count": 3}


def test_outlier_thresholds_are_strict_and_relative():
    gt = _field([[(100.0, 0.0), (100.0, 0.0)], [(0.0, 0.0), (0.0, 60.0)]])
    err = _field([[(6.0, 0.0), (5.0, 0.0)], [(3.0, 0.0), (0.0, 3.0)]])
    # EPE 6 > 5 = 5% of 100 -> outlier; EPE 5 = 5% -> not; EPE 3 = 3 px -> not; EPE 3 on 60 -> not
    m = flow_metrics(gt + err, gt, torch.ones(1, 2, 2, dtype=torch.bool))
    assert m["fl_all"] == pytest.approx(0.25)
    assert m["aee"] == pytest.approx(17.0 / 4)


def test_empty_gives_nan_and_zero_count():
    m = flow_metrics(GT + ERR, GT, torch.zeros(1, 2, 2, dtype=torch.bool))
    assert m["count"] == 0 and math.isnan(m["aee"]) and math.isnan(m["fl_all"])


def test_pooled_over_images_not_averaged_per_image():
    gt = torch.zeros(2, 2, 2, 2)
    flow = torch.zeros(2, 2, 2, 2)
    flow[0, 0, 0, 0] = 10.0  # image 0: one valid pixel with EPE 10
    valid = torch.zeros(2, 2, 2, dtype=torch.bool)
    valid[0, 0, 0] = True
    valid[1] = True  # image 1: four valid pixels with EPE 0
    m = flow_metrics(flow, gt, valid)
    assert m == {"aee": pytest.approx(2.0), "fl_all": pytest.approx(0.2), "count": 5}
    # accumulating per-image sums gives the same pooled result
    parts = [flow_error_sums(flow[i : i + 1], gt[i : i + 1], valid[i : i + 1]) for i in range(2)]
    total = {key: parts[0][key] + parts[1][key] for key in parts[0]}
    assert flow_metrics_from_sums(total) == m


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="valid"):
        flow_error_sums(GT, GT, torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="gt"):
        flow_error_sums(GT, GT[:, :1], torch.ones(1, 2, 2, dtype=torch.bool))
