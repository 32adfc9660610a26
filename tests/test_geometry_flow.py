"""Camera model and flow composition (motion_rcnn_d2.geometry.camera / flow)."""
import math

import numpy as np
import pytest
import torch

from motion_rcnn_d2.geometry import (
    apply_object_motions,
    backproject,
    camera_flow,
    compose_flow,
    compose_flow_indexed,
    euler_angles_to_matrix,
    flip_intrinsics,
    pixel_grid,
    project,
    scale_intrinsics,
    scene_flow,
    warp_backward,
)

DT = torch.float64
H, W = 5, 6  # a 6x5 image (W x H)


def _intrinsics(bsz=1, fx=50.0, fy=55.0, cx=2.7, cy=2.1):
    k = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=DT)
    return k.expand(bsz, 3, 3).clone()


def _random_scene(bsz=2, num=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    depth = 5 + 15 * torch.rand(bsz, 1, H, W, generator=gen, dtype=DT)
    depth[0, 0, 0, 0] = 0.0
    depth[0, 0, 1, 2] = float("nan")
    depth[1, 0, 4, 5] = float("inf")
    depth[1, 0, 3, 0] = -2.0
    masks = torch.rand(bsz, num, H, W, generator=gen, dtype=DT) / num
    angles = (torch.rand(bsz, num, 3, generator=gen, dtype=DT) - 0.5) * 0.4
    return {
        "depth": depth,
        "intrinsics": _intrinsics(bsz),
        "masks": masks,
        "rotations": euler_angles_to_matrix(angles),
        "translations": torch.randn(bsz, num, 3, generator=gen, dtype=DT),
        "pivots": torch.randn(bsz, num, 3, generator=gen, dtype=DT) + torch.tensor([0, 0, 10.0]),
        "camera_rotation": euler_angles_to_matrix(
            (torch.rand(bsz, 3, generator=gen, dtype=DT) - 0.5) * 0.1
        ),
        "camera_translation": torch.randn(bsz, 3, generator=gen, dtype=DT) * 0.5,
    }


def _loop_reference(scene, eps=1e-6):
    """Per-pixel numpy evaluation of the section-4 equation (independent of the library code)."""
    s = {k: v.detach().numpy() for k, v in scene.items()}
    bsz, num = s["masks"].shape[:2]
    flow = np.zeros((bsz, 2, H, W))
    valid = np.zeros((bsz, H, W), dtype=bool)
    for b in range(bsz):
        k_inv = np.linalg.inv(s["intrinsics"][b])
        for v in range(H):
            for u in range(W):
                d = s["depth"][b, 0, v, u]
                if not (np.isfinite(d) and d > 0):
                    continue
                p = d * k_inv @ np.array([u, v, 1.0])
                p1 = p.copy()
                for k in range(num):
                    r, t, piv = s["rotations"][b, k], s["translations"][b, k], s["pivots"][b, k]
                    p1 += s["masks"][b, k, v, u] * (r @ (p - piv) + piv + t - p)
                p2 = s["camera_rotation"][b] @ p1 + s["camera_translation"][b]
                if p2[2] <= eps:
                    continue
                x = s["intrinsics"][b] @ (p2 / p2[2])
                flow[b, :, v, u] = x[:2] - [u, v]
                valid[b, v, u] = True
    return flow, valid


def test_compose_flow_matches_per_pixel_loop():
    scene = _random_scene()
    # push object 0 of image 1 (present at one pixel only) far backwards: that point ends behind
    # the camera
    scene["masks"][1, 0] = 0.0
    scene["masks"][1, 0, 2, 3] = 1.0
    scene["masks"][1, 1:, 2, 3] = 0.0
    scene["translations"][1, 0] = torch.tensor([0.0, 0.0, -100.0], dtype=DT)
    flow, valid = compose_flow(**scene)
    ref_flow, ref_valid = _loop_reference(scene)
    assert not valid[1, 2, 3]
    np.testing.assert_array_equal(valid.numpy(), ref_valid)
    assert ref_valid.sum() == 2 * H * W - 5
    np.testing.assert_allclose(flow.numpy(), ref_flow, atol=1e-9)
    assert (flow[~valid[:, None].expand_as(flow)] == 0).all()


def test_compose_flow_float32_close_to_float64():
    scene = _random_scene(seed=1)
    flow64, valid64 = compose_flow(**scene)
    flow32, valid32 = compose_flow(**{k: v.float() for k, v in scene.items()})
    assert flow32.dtype == torch.float32
    assert torch.equal(valid32, valid64)
    torch.testing.assert_close(flow32.double(), flow64, atol=1e-3, rtol=1e-4)


def test_indexed_equals_one_hot_masks():
    scene = _random_scene(num=4, seed=2)
    gen = torch.Generator().manual_seed(7)
    index = torch.randint(-1, 4, (2, H, W), generator=gen)
    one_hot = torch.stack([(index == k) for k in range(4)], dim=1).to(DT)
    args = {k: scene[k] for k in ("depth", "intrinsics", "rotations", "translations", "pivots",
                                  "camera_rotation", "camera_translation")}
    flow_i, valid_i = compose_flow_indexed(instance_index=index, **args)
    flow_m, valid_m = compose_flow(masks=one_hot, **args)
    assert torch.equal(valid_i, valid_m)
    torch.testing.assert_close(flow_i, flow_m, atol=1e-9, rtol=0)
    # and with no instance at all (N = 0): only camera motion
    empty = {
        "rotations": torch.zeros(2, 0, 3, 3, dtype=DT),
        "translations": torch.zeros(2, 0, 3, dtype=DT),
        "pivots": torch.zeros(2, 0, 3, dtype=DT),
    }
    flow_e, _ = compose_flow_indexed(scene["depth"], scene["intrinsics"], torch.full((2, H, W), -1),
                                     camera_rotation=scene["camera_rotation"],
                                     camera_translation=scene["camera_translation"], **empty)
    flow_c, _ = camera_flow(scene["depth"], scene["intrinsics"], scene["camera_rotation"],
                            scene["camera_translation"])
    torch.testing.assert_close(flow_e, flow_c, atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="masks"):
        compose_flow(masks=one_hot[:, :, :-1], **args)
    with pytest.raises(ValueError, match="rotations"):
        compose_flow(masks=one_hot[:, :3], **args)
    with pytest.raises(ValueError, match="instance_index"):
        compose_flow_indexed(instance_index=torch.full((2, H, W), 4), **args)


def test_identity_motion_gives_zero_flow():
    scene = _random_scene(seed=3)
    scene["rotations"] = torch.eye(3, dtype=DT).expand(2, 3, 3, 3)
    scene["translations"] = torch.zeros(2, 3, 3, dtype=DT)
    scene["camera_rotation"] = torch.eye(3, dtype=DT).expand(2, 3, 3)
    scene["camera_translation"] = torch.zeros(2, 3, dtype=DT)
    flow, valid = compose_flow(**scene)  # pivots stay random: irrelevant for R = I, t = 0
    assert valid.sum() == 2 * H * W - 4
    assert flow.abs().max() < 1e-12
    flow, valid = compose_flow(scene["depth"], scene["intrinsics"])
    assert flow.abs().max() == 0 and valid.sum() == 2 * H * W - 4


def test_forward_camera_motion_expands_from_principal_point():
    k = _intrinsics(fx=40.0, fy=40.0, cx=2.0, cy=3.0)
    depth = torch.full((1, 1, H, W), 10.0, dtype=DT)
    # the camera moves 1 m forward: static points move by -1 m along z in camera coordinates
    t_cam = torch.tensor([[0.0, 0.0, -1.0]], dtype=DT)
    flow, valid = camera_flow(depth, k, torch.eye(3, dtype=DT)[None], t_cam)
    assert valid.all()
    grid = pixel_grid(H, W, dtype=DT)
    offset = grid - torch.tensor([2.0, 3.0], dtype=DT)[:, None, None]
    # x'' - c = (x - c) * d / (d - 1): flow = (x - c) / 9, pointing away from the principal point
    torch.testing.assert_close(flow[0], offset / 9.0, atol=1e-12, rtol=0)
    assert torch.equal(torch.sign(flow[0]), torch.sign(offset))


def test_point_behind_camera_is_invalid_without_nan():
    depth = torch.full((1, 1, H, W), 4.0, dtype=DT, requires_grad=True)
    t_cam = torch.tensor([[0.0, 0.0, -4.0]], dtype=DT, requires_grad=True)  # Z'' = 0 exactly
    flow, valid = camera_flow(depth, _intrinsics(), torch.eye(3, dtype=DT)[None], t_cam)
    assert not valid.any() and torch.equal(flow, torch.zeros_like(flow))
    flow.sum().backward()
    assert torch.equal(depth.grad, torch.zeros_like(depth))
    assert torch.equal(t_cam.grad, torch.zeros_like(t_cam))
    flow, valid = camera_flow(depth, _intrinsics(), torch.eye(3, dtype=DT)[None],
                              torch.tensor([[0.0, 0.0, -3.9]], dtype=DT))
    assert valid.all()


def test_gradients_finite_and_nonzero_for_every_input():
    scene = _random_scene(seed=4)
    scene["camera_translation"][0, 2] = -18.0  # some points of image 0 end behind the camera
    leaves = {k: v.clone().requires_grad_(True) for k, v in scene.items()}
    flow, valid = compose_flow(**leaves)
    assert (~valid[0]).sum() > 2 and valid[1].sum() == H * W - 2
    weights = torch.randn(flow.shape, generator=torch.Generator().manual_seed(0), dtype=DT)
    (flow * weights).sum().backward()
    for name, leaf in leaves.items():
        assert torch.isfinite(leaf.grad).all(), name
        assert leaf.grad.abs().sum() > 0, name
    assert (leaves["depth"].grad[:, 0][~valid] == 0).all()


def test_scene_flow_translations():
    depth = torch.full((1, 1, H, W), 8.0, dtype=DT)
    masks = torch.zeros(1, 1, H, W, dtype=DT)
    masks[0, 0, 1:3, 2:4] = 1.0
    t_obj = torch.tensor([[[0.5, -0.2, 1.0]]], dtype=DT)
    t_cam = torch.tensor([[0.1, 0.0, -0.3]], dtype=DT)
    eye = torch.eye(3, dtype=DT)[None, None]
    flow3d, valid = scene_flow(depth, _intrinsics(), masks, eye, t_obj,
                               torch.zeros(1, 1, 3, dtype=DT), camera_translation=t_cam)
    assert valid.all()
    expected = t_cam[0, :, None, None] + masks[0] * t_obj[0, 0, :, None, None]
    torch.testing.assert_close(flow3d[0], expected.expand(3, H, W), atol=1e-12, rtol=0)


def test_object_rotation_about_its_pivot():
    # the pivot itself is only translated; 90 deg about y maps pivot + (1,0,0) to pivot - (0,0,1)
    k = _intrinsics()
    pivot = backproject(torch.full((1, 1, H, W), 10.0, dtype=DT), k)[0, :, 2, 3]
    points = torch.stack([pivot, pivot + torch.tensor([1.0, 0, 0], dtype=DT)], dim=-1)
    points = points[None, :, None]  # (1, 3, 1, 2)
    r = euler_angles_to_matrix(torch.tensor([0.0, math.pi / 2, 0.0], dtype=DT))
    t = torch.tensor([0.0, 0.0, 2.0], dtype=DT)
    ones = torch.ones(1, 1, 1, 2, dtype=DT)
    moved = apply_object_motions(points, ones, r[None, None], t[None, None],
                                 pivot[None, None])
    torch.testing.assert_close(moved[0, :, 0, 0], pivot + t, atol=1e-12, rtol=0)
    torch.testing.assert_close(moved[0, :, 0, 1], pivot + t - torch.tensor([0, 0, 1.0], dtype=DT),
                               atol=1e-12, rtol=0)


def test_backproject_project_round_trip_and_vkitti_centre():
    k = torch.tensor([[[725.0, 0.0, 620.5], [0.0, 725.0, 187.0], [0.0, 0.0, 1.0]]], dtype=DT)
    # the point straight ahead projects to (cx, cy)
    pixels, valid = project(torch.tensor([0.0, 0.0, 5.0], dtype=DT).reshape(1, 3, 1, 1), k)
    torch.testing.assert_close(pixels.flatten(), torch.tensor([620.5, 187.0], dtype=DT))
    depth = torch.rand(1, 1, H, W, dtype=DT) + 1
    pixels, valid = project(backproject(depth, k), k)
    assert valid.all()
    torch.testing.assert_close(pixels[0], pixel_grid(H, W, dtype=DT), atol=1e-9, rtol=0)


def test_scale_intrinsics_pixel_centre_convention():
    k = torch.tensor([[[725.0, 0.0, 620.5], [0.0, 725.0, 187.0], [0.0, 0.0, 1.0]]], dtype=DT)
    # VKITTI 1242x375 -> 621 wide: the centre 620.5 of 1242 px maps to 310 = (621 - 1) / 2
    half = scale_intrinsics(k, 0.5, 0.5)
    expected = torch.tensor([[362.5, 0, 310.0], [0, 362.5, 93.25], [0, 0, 1.0]], dtype=DT)
    torch.testing.assert_close(half[0], expected)
    sx, sy = 0.75, 1.5
    scaled = scale_intrinsics(k, sx, sy)
    points = torch.tensor([[1.3, -0.7, 9.0], [-4.0, 1.1, 21.0]], dtype=DT).T.reshape(1, 3, 1, 2)
    px, _ = project(points, k)
    px_scaled, _ = project(points, scaled)
    expected = torch.stack([sx * (px[:, 0] + 0.5) - 0.5, sy * (px[:, 1] + 0.5) - 0.5], dim=1)
    torch.testing.assert_close(px_scaled, expected, atol=1e-9, rtol=0)
    # batched scales and leading dims
    batched = scale_intrinsics(k.expand(2, 3, 3), torch.tensor([0.5, 2.0], dtype=DT), 1.0)
    torch.testing.assert_close(batched[1, 0, 2], torch.tensor(2 * 621.0 - 0.5, dtype=DT))


def test_flip_intrinsics_mirrors_image_and_points():
    k = _intrinsics()
    k_flip = flip_intrinsics(k, W)
    torch.testing.assert_close(k_flip[0, 0, 2], torch.tensor(W - 1 - 2.7, dtype=DT))
    points = torch.tensor([[1.3, -0.7, 9.0], [-4.0, 1.1, 21.0]], dtype=DT).T.reshape(1, 3, 1, 2)
    mirrored = points * torch.tensor([-1.0, 1.0, 1.0], dtype=DT)[:, None, None]
    px, _ = project(points, k)
    px_flip, _ = project(mirrored, k_flip)
    torch.testing.assert_close(px_flip[:, 0], W - 1 - px[:, 0], atol=1e-9, rtol=0)
    torch.testing.assert_close(px_flip[:, 1], px[:, 1], atol=1e-9, rtol=0)
    # a flipped depth map back-projected with the flipped K gives the mirrored point cloud
    depth = torch.rand(1, 1, H, W, dtype=DT) + 1
    cloud = backproject(depth, k)
    cloud_flip = backproject(depth.flip(-1), k_flip)
    mirror = torch.tensor([-1.0, 1, 1], dtype=DT)[:, None, None]
    torch.testing.assert_close(cloud_flip.flip(-1), cloud * mirror,
                               atol=1e-9, rtol=0)


def test_warp_backward_integer_shift():
    gen = torch.Generator().manual_seed(5)
    frame = torch.rand(1, 2, H, W, generator=gen, dtype=DT)
    nxt = torch.zeros_like(frame)
    nxt[..., 2:] = frame[..., :-2]  # content moves 2 px right between t and t+1
    flow = torch.zeros(1, 2, H, W, dtype=DT)
    flow[:, 0] = 2.0
    warped, inside = warp_backward(nxt, flow)
    expected_inside = torch.zeros(1, H, W, dtype=torch.bool)
    expected_inside[..., : W - 2] = True
    assert torch.equal(inside, expected_inside)
    torch.testing.assert_close(warped[..., : W - 2], frame[..., : W - 2], atol=1e-9, rtol=0)


def test_warp_backward_fractional_shift():
    gen = torch.Generator().manual_seed(6)
    nxt = torch.rand(1, 1, H, W, generator=gen, dtype=DT)
    flow = torch.zeros(1, 2, H, W, dtype=DT)
    flow[:, 0], flow[:, 1] = 0.25, -0.5
    warped, inside = warp_backward(nxt, flow)
    # bilinear: x + 0.25 between columns j, j+1; y - 0.5 between rows i-1, i
    n = nxt[0, 0]
    row_i = 0.75 * n[1:, :-1] + 0.25 * n[1:, 1:]
    row_i_minus_1 = 0.75 * n[:-1, :-1] + 0.25 * n[:-1, 1:]
    expected = 0.5 * row_i + 0.5 * row_i_minus_1
    torch.testing.assert_close(warped[0, 0, 1:, :-1], expected, atol=1e-9, rtol=0)
    expected_inside = torch.ones(1, H, W, dtype=torch.bool)
    expected_inside[:, 0, :] = False  # y - 0.5 < 0
    expected_inside[:, :, W - 1] = False  # x + 0.25 > W - 1
    assert torch.equal(inside, expected_inside)
    # a linear image shifted by a fractional amount is reproduced exactly in the interior
    grid = pixel_grid(H, W, dtype=DT)
    frame = (3 * grid[0] - 2 * grid[1] + 1)[None, None]
    shifted = (3 * (grid[0] - 0.25) - 2 * (grid[1] + 0.5) + 1)[None, None]
    warped, _ = warp_backward(shifted, flow)
    torch.testing.assert_close(warped[..., 1:, :-1], frame[..., 1:, :-1], atol=1e-9, rtol=0)


def test_check_intrinsics_accepts_a_pinhole_k_and_names_the_input_otherwise():
    from motion_rcnn_d2.geometry import check_intrinsics

    k = [[700.0, 0.5, 300.0], [0.0, 710.0, 120.0], [0.0, 0.0, 1.0]]
    out = check_intrinsics(k, "pair 7")
    assert out.dtype == torch.float64 and out.tolist() == k
    bad = {"shape": [[1.0, 0.0], [0.0, 1.0]], "fx": [[0.0, 0, 3], [0, 7, 1], [0, 0, 1]],
           "nan": [[7.0, 0, float("nan")], [0, 7, 1], [0, 0, 1]],
           "row": [[7.0, 0, 3], [0, 7, 1], [0, 0.1, 1]],
           "skew row": [[7.0, 0, 3], [1, 7, 1], [0, 0, 1]],
           "none": None, "ragged": [[1.0], [1.0, 2.0]]}
    for name, value in bad.items():
        with pytest.raises(ValueError,
                           match=r"^pair 7: 'intrinsics' must be a 3x3 pinhole.*Fix it\.$"):
            check_intrinsics(value, "pair 7", "Fix it.")


def test_crop_intrinsics_moves_the_principal_point_per_batch_entry():
    from motion_rcnn_d2.geometry import crop_intrinsics, project

    k = torch.tensor([[700.0, 0.5, 300.0], [0.0, 710.0, 120.0], [0.0, 0.0, 1.0]]).expand(2, 3, 3)
    cropped = crop_intrinsics(k, torch.tensor([10.0, 0.0]), torch.tensor([4.0, 20.0]))
    points = torch.tensor([1.5, -0.5, 12.0]).view(1, 3, 1, 1).expand(2, 3, 1, 1)
    (uv, _), (uv_crop, _) = project(points, k), project(points, cropped)
    shift = torch.tensor([[10.0, 4.0], [0.0, 20.0]])
    assert torch.allclose(uv_crop[:, :, 0, 0], uv[:, :, 0, 0] - shift)
    assert torch.equal(cropped[:, :, :2], k[:, :, :2])


def _previous_backproject(depth, intrinsics):
    """Back-projection as it was computed on a full (2, H, W) pixel grid (the reference of the
    broadcasting version)."""
    grid = pixel_grid(depth.shape[2], depth.shape[3], dtype=depth.dtype)
    k = intrinsics[:, :, :, None, None]
    y_n = (grid[1] - k[:, 1, 2]) / k[:, 1, 1]
    x_n = (grid[0] - k[:, 0, 2] - k[:, 0, 1] * y_n) / k[:, 0, 0]
    return torch.stack([x_n * depth[:, 0], y_n * depth[:, 0], depth[:, 0]], dim=1)


def _previous_indexed_flow(depth, intrinsics, index, rotations, translations, pivots, cam_r,
                           cam_t, eps=1e-6):
    """compose_flow_indexed as it was computed before (a (B, 3, 3, H, W) product summed over
    its third axis, a (B, H W, 12) gather, torch.where with filled tensors)."""
    valid_depth = (depth > 0) & torch.isfinite(depth)
    points = _previous_backproject(torch.where(valid_depth, depth, torch.ones_like(depth)),
                                   intrinsics)
    eye = torch.eye(3, dtype=depth.dtype)
    a = rotations - eye
    params = torch.cat([a.flatten(-2), translations - (a @ pivots[..., None])[..., 0]], dim=-1)
    bsz, num = rotations.shape[:2]
    params = torch.cat([params, params.new_zeros(bsz, 1, 12)], dim=1)
    slot = torch.where(index < 0, torch.full_like(index, num), index).reshape(bsz, -1, 1)
    per_pixel = params.gather(1, slot.expand(-1, -1, 12)).transpose(1, 2).reshape(
        bsz, 12, *depth.shape[2:])
    moved = (points + (per_pixel[:, :9].unflatten(1, (3, 3)) * points[:, None]).sum(dim=2)
             + per_pixel[:, 9:])
    moved = torch.einsum("bij,bjhw->bihw", cam_r, moved) + cam_t[:, :, None, None]
    ok = (moved[:, 2] > eps) & torch.isfinite(moved).all(dim=1)
    safe = torch.where(ok[:, None], moved, torch.ones_like(moved))
    k = intrinsics[:, :, :, None, None]
    x_n, y_n = safe[:, 0] / safe[:, 2], safe[:, 1] / safe[:, 2]
    pixels = torch.stack([k[:, 0, 0] * x_n + k[:, 0, 1] * y_n + k[:, 0, 2],
                          k[:, 1, 1] * y_n + k[:, 1, 2]], dim=1)
    pixels = torch.where(ok[:, None], pixels, torch.zeros_like(pixels))
    valid = valid_depth[:, 0] & ok
    flow = pixels - pixel_grid(*depth.shape[2:], dtype=depth.dtype)
    flow = torch.where(valid[:, None], flow, torch.zeros_like(flow))
    nan = torch.full_like(points, float("nan"))
    keep = valid_depth
    return flow, valid, torch.where(keep, points, nan), torch.where(keep, moved - points, nan)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_indexed_flow_and_backprojection_are_bitwise_the_previous_computation(dtype):
    """The faster formulations (row-wise A P, one index_select per image, broadcast rays,
    masked_fill) round exactly as the previous ones: the same bits, also in float32."""
    gen = torch.Generator().manual_seed(11)
    bsz, num, height, width = 2, 5, 37, 53
    scene = _random_scene(bsz=bsz, num=num, seed=4)
    depth = (1 + 60 * torch.rand(bsz, 1, height, width, generator=gen, dtype=DT)).to(dtype)
    depth[0, 0, :3, :4] = 0.0
    depth[1, 0, 5, 7] = float("nan")
    depth[1, 0, 9, 1] = 0.3  # in front of the camera before, behind after the motion below
    intrinsics = torch.tensor([[[721.5, 0.7, 26.3], [0, 710.2, 18.9], [0, 0, 1]]],
                              dtype=dtype).expand(bsz, 3, 3).clone()
    index = torch.randint(-1, num, (bsz, height, width), generator=gen)
    motion = [scene[k].to(dtype) for k in ("rotations", "translations", "pivots",
                                            "camera_rotation", "camera_translation")]
    motion[4] = motion[4] + torch.tensor([0.0, 0.0, -0.5], dtype=dtype)
    new = compose_flow_indexed(depth, intrinsics, index, *motion, with_points=True)
    old = _previous_indexed_flow(depth, intrinsics, index, *motion)
    assert not old[1].all() and old[1].any()  # both valid and invalid pixels
    pairs = [(backproject(depth, intrinsics), _previous_backproject(depth, intrinsics))]
    for got, expected in pairs + list(zip(new, old)):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert torch.equal(got.isnan(), expected.isnan())
        assert torch.equal(torch.nan_to_num(got, nan=0.0), torch.nan_to_num(expected, nan=0.0))
