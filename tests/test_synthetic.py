"""The synthetic world: exact rendering, ground truth read back from the written files, the
Virtual KITTI 2 layout, and determinism.

The flow checks recompute everything from the WRITTEN files with code independent of the
generator's: motions from extrinsic.txt / pose.txt camera columns (docs/method.md section 5, second
bullet, written out here), masks from the instance PNG, flow with geometry.compose_flow
(one-hot masks; the generator uses compose_flow_indexed).
"""
import hashlib
import os

import numpy as np
import pytest
import torch

from motion_rcnn_d2.data import formats
from motion_rcnn_d2.data.synthetic import (
    Scene,
    SceneObject,
    cast_rays,
    generate_world,
    intrinsics_for_size,
    matrix_to_euler_angles,
    pair_ground_truth,
    pair_motions,
    render_frame,
    sample_scene,
    sequence_rng,
)
from motion_rcnn_d2.data.synthetic.textures import WaveTexture
from motion_rcnn_d2.geometry import (
    camera_flow,
    compose_flow,
    euler_angles_to_matrix,
    warp_backward,
)

SEED, SEQUENCES, FRAMES, WIDTH, HEIGHT = 7, 2, 3, 256, 80
VKITTI2_HEADERS = {
    "intrinsic.txt": "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]",
    "extrinsic.txt": "frame cameraID r1,1 r1,2 r1,3 t1 r2,1 r2,2 r2,3 t2 r3,1 r3,2 r3,3 t3 "
                     "0 0 0 1",
    "pose.txt": "frame cameraID trackID alpha width height length world_space_X world_space_Y "
                "world_space_Z rotation_world_space_y rotation_world_space_x "
                "rotation_world_space_z camera_space_X camera_space_Y camera_space_Z "
                "rotation_camera_space_y rotation_camera_space_x rotation_camera_space_z",
    "bbox.txt": "frame cameraID trackID left right top bottom number_pixels truncation_ratio "
                "occupancy_ratio isMoving",
    "info.txt": "trackID label model color",
    "colors.txt": "Category r g b",
}
# 16-bit flow PNG rounding: at most half a step, (size - 1) / 65535 px per component.
FLOW_QUANT = float(np.hypot((WIDTH - 1) / 65535.0, (HEIGHT - 1) / 65535.0))


@pytest.fixture(scope="module")
def world(module_tmp):
    out = module_tmp
    roots = generate_world(out, sequences=SEQUENCES, frames=FRAMES, width=WIDTH, height=HEIGHT,
                           seed=SEED, progress=False)
    return out, roots


def _table(root, name):
    with open(os.path.join(root, name), encoding="utf-8") as f:
        lines = f.read().splitlines()
    header = lines[0].split(" ")
    return header, [dict(zip(header, line.split(" "))) for line in lines[1:]]


def _frame_file(root, folder, stem, frame, ext="png"):
    return os.path.join(root, "frames", folder, "Camera_0", f"{stem}_{frame:05d}.{ext}")


def _read_text_ground_truth(root):
    """K, extrinsics and camera-space poses parsed from the text files."""
    intrinsics = {int(r["frame"]): np.array([[float(r["K[0,0]"]), 0, float(r["K[0,2]"])],
                                             [0, float(r["K[1,1]"]), float(r["K[1,2]"])],
                                             [0, 0, 1]])
                  for r in _table(root, "intrinsic.txt")[1]}
    header, rows = _table(root, "extrinsic.txt")
    extrinsics = {int(r["frame"]): np.array([float(r[c]) for c in header[2:]]).reshape(4, 4)
                  for r in rows}
    poses = {}
    for r in _table(root, "pose.txt")[1]:
        angles = torch.tensor([float(r["rotation_camera_space_x"]),
                               float(r["rotation_camera_space_y"]),
                               float(r["rotation_camera_space_z"])], dtype=torch.float64)
        position = np.array([float(r[f"camera_space_{a}"]) for a in "XYZ"])
        poses[int(r["frame"]), int(r["trackID"])] = (euler_angles_to_matrix(angles).numpy(),
                                                     position)
    return intrinsics, extrinsics, poses


def _motions_from_text(text, frame, track_ids):
    """docs/method.md section 5: R_cam = R_e1 R_e0^T, t_cam = t_e1 - R_cam t_e0; per object
    R_k = R_cam^T Rc1 Rc0^T, p_k = c0, t_k = R_cam^T (c1 - t_cam) - c0."""
    _, extrinsics, poses = text
    e0, e1 = extrinsics[frame], extrinsics[frame + 1]
    r_cam = e1[:3, :3] @ e0[:3, :3].T
    t_cam = e1[:3, 3] - r_cam @ e0[:3, 3]
    rotations, translations, pivots = [], [], []
    for track in track_ids:
        (rc0, c0), (rc1, c1) = poses[frame, track], poses[frame + 1, track]
        rotations.append(r_cam.T @ rc1 @ rc0.T)
        translations.append(r_cam.T @ (c1 - t_cam) - c0)
        pivots.append(c0)
    return r_cam, t_cam, np.array(rotations), np.array(translations), np.array(pivots)


def _t(array):
    return torch.from_numpy(np.asarray(array, dtype=np.float64))[None]


def _pairs(roots):
    for root in roots:
        text = _read_text_ground_truth(root)
        for frame in range(FRAMES - 1):
            depth = formats.read_depth_png(_frame_file(root, "depth", "depth", frame))
            instance = formats.read_instance_png(
                _frame_file(root, "instanceSegmentation", "instancegt", frame))
            gt_flow, gt_valid = formats.read_vkitti_flow_png(
                _frame_file(root, "forwardFlow", "flow", frame))
            tracks = sorted(int(i) - 1 for i in np.unique(instance) if i > 0)
            r_cam, t_cam, rot, trans, piv = _motions_from_text(text, frame, tracks)
            masks = np.stack([instance == k + 1 for k in tracks]).astype(np.float64)
            flow, valid = compose_flow(_t(depth)[None], _t(text[0][frame]), _t(masks), _t(rot),
                                       _t(trans), _t(piv), _t(r_cam), _t(t_cam))
            yield dict(root=root, frame=frame, depth=depth, instance=instance, tracks=tracks,
                       gt_flow=gt_flow, gt_valid=gt_valid, r_cam=r_cam, t_cam=t_cam, text=text,
                       flow=flow[0].permute(1, 2, 0).numpy(), valid=valid[0].numpy())


def test_layout_and_headers(world):
    _, roots = world
    assert [os.path.relpath(r, world[0]) for r in roots] == [
        os.path.join(f"Scene{i:02d}", "clone") for i in (1, 2)]
    for root in roots:
        for name, header in VKITTI2_HEADERS.items():
            with open(os.path.join(root, name), encoding="utf-8") as f:
                assert f.readline().rstrip("\n") == header
        colours = {tuple(int(r[c]) for c in "rgb") for r in _table(root, "colors.txt")[1]}
        for frame in range(FRAMES):
            image = formats.read_image(_frame_file(root, "rgb", "rgb", frame, "jpg"))
            assert image.shape == (HEIGHT, WIDTH, 3)
            depth = formats.read_depth_png(_frame_file(root, "depth", "depth", frame))
            assert depth.shape == (HEIGHT, WIDTH) and (depth > 0).all() and depth.max() < 655
            classes = formats.read_image(_frame_file(root, "classSegmentation", "classgt", frame))
            assert {tuple(c) for c in classes[..., ::-1].reshape(-1, 3)} <= colours
        flows = os.listdir(os.path.join(root, "frames", "forwardFlow", "Camera_0"))
        assert sorted(flows) == [f"flow_{i:05d}.png" for i in range(FRAMES - 1)]
        tracks = {int(r["trackID"]) for r in _table(root, "info.txt")[1]}
        assert {int(r["trackID"]) for r in _table(root, "pose.txt")[1]} == tracks
        assert len(_table(root, "pose.txt")[1]) == FRAMES * len(tracks)


def test_written_flow_equals_flow_composed_from_written_files(world):
    errors = []
    for pair in _pairs(world[1]):
        valid = pair["gt_valid"]
        assert valid.mean() > 0.5
        assert pair["valid"][valid].all()  # composed flow is defined wherever the GT is valid
        epe = np.linalg.norm(pair["flow"] - pair["gt_flow"], axis=2)[valid]
        assert epe.max() < FLOW_QUANT + 1e-3
        errors.append(epe)
    aee = float(np.concatenate(errors).mean())
    print(f"\nAEE(flow from written depth/masks/txt motions, written GT flow) = {aee:.5f} px")
    assert aee < 0.01


def test_validity_follows_the_next_frame(world):
    """Valid pixels land on the same instance at t+1; some in-image pixels are occluded."""
    occluded, checked, agree = 0, 0, 0
    for pair in _pairs(world[1]):
        next_instance = formats.read_instance_png(_frame_file(
            pair["root"], "instanceSegmentation", "instancegt", pair["frame"] + 1))
        v, u = np.mgrid[0:HEIGHT, 0:WIDTH]
        tu = np.rint(u + pair["flow"][..., 0]).astype(int)
        tv = np.rint(v + pair["flow"][..., 1]).astype(int)
        inside = pair["valid"] & (tu >= 0) & (tu < WIDTH) & (tv >= 0) & (tv < HEIGHT)
        valid = pair["gt_valid"]
        same = next_instance[tv.clip(0, HEIGHT - 1), tu.clip(0, WIDTH - 1)] == pair["instance"]
        checked += int(valid.sum())
        agree += int((same & valid).sum())
        occluded += int((inside & ~valid).sum())
    assert agree / checked > 0.99
    assert occluded > 0


def _photometric(image_t, image_t1, flow, valid):
    warped, inside = warp_backward(_t(image_t1.transpose(2, 0, 1).astype(np.float64)),
                                   _t(flow.transpose(2, 0, 1)))
    mask = valid & inside[0].numpy()
    diff = np.abs(warped[0].numpy().transpose(1, 2, 0) - image_t.astype(np.float64)).mean(axis=2)
    return float(diff[mask].mean())


def test_photometric_consistency(world):
    """Frame t+1 sampled at x + flow reproduces frame t on pixels valid in the flow."""
    rendered, written = [], []
    for index, root in enumerate(world[1]):
        scene = sample_scene(sequence_rng(SEED, index), FRAMES, WIDTH, HEIGHT)
        renders = [render_frame(scene, t) for t in range(FRAMES)]
        for frame in range(FRAMES - 1):
            truth = pair_ground_truth(scene, frame, renders[frame])
            rendered.append(_photometric(renders[frame]["rgb"], renders[frame + 1]["rgb"],
                                         truth["flow"], truth["valid"]))
            jpegs = [formats.read_image(_frame_file(root, "rgb", "rgb", t, "jpg"))[..., ::-1]
                     for t in (frame, frame + 1)]
            flow, valid = formats.read_vkitti_flow_png(_frame_file(root, "forwardFlow", "flow",
                                                                   frame))
            written.append(_photometric(jpegs[0], jpegs[1], flow, valid))
    print(f"\nphotometric MAE (grey levels /255): rendered {np.mean(rendered):.3f} "
          f"(max {np.max(rendered):.3f}), written JPEG + flow PNG {np.mean(written):.3f}")
    assert max(rendered) < 2.0
    assert max(written) < 4.0


def test_motions_from_text_files_equal_the_generators(world):
    for index, root in enumerate(world[1]):
        scene = sample_scene(sequence_rng(SEED, index), FRAMES, WIDTH, HEIGHT)
        text = _read_text_ground_truth(root)
        np.testing.assert_allclose(text[0][0], scene.intrinsics, rtol=1e-9)
        moving_rows = {(int(r["frame"]), int(r["trackID"])): r["isMoving"] == "True"
                       for r in _table(root, "bbox.txt")[1]}
        for frame in range(FRAMES - 1):
            own = pair_motions(scene, frame)
            tracks = [obj.track_id for obj in scene.objects]
            r_cam, t_cam, rot, trans, piv = _motions_from_text(text, frame, tracks)
            np.testing.assert_allclose(r_cam, own["camera_rotation"], atol=1e-8)
            np.testing.assert_allclose(t_cam, own["camera_translation"], atol=1e-7)
            np.testing.assert_allclose(rot, own["rotations"], atol=1e-8)
            np.testing.assert_allclose(trans, own["translations"], atol=1e-7)
            np.testing.assert_allclose(piv, own["pivots"], atol=1e-7)
            identity = np.all(np.abs(rot - np.eye(3)) < 1e-9, axis=(1, 2)) & np.all(
                np.abs(trans) < 1e-7, axis=1)
            np.testing.assert_array_equal(~identity, own["moving"])
            for track, moving in zip(tracks, own["moving"]):
                if (frame, track) in moving_rows:
                    assert moving_rows[frame, track] == moving


def test_moving_objects_differ_from_camera_flow_still_ones_do_not(world):
    seen = {True: 0, False: 0}
    for pair in _pairs(world[1]):
        moving = {int(r["trackID"]): r["isMoving"] == "True"
                  for r in _table(pair["root"], "bbox.txt")[1] if int(r["frame"]) == pair["frame"]}
        cam, _ = camera_flow(_t(pair["depth"])[None], _t(pair["text"][0][pair["frame"]]),
                             _t(pair["r_cam"]), _t(pair["t_cam"]))
        cam = cam[0].permute(1, 2, 0).numpy()
        for track in pair["tracks"]:
            pixels = (pair["instance"] == track + 1) & pair["gt_valid"]
            if pixels.sum() < 20:
                continue
            diff = np.linalg.norm(pair["gt_flow"] - cam, axis=2)[pixels]
            if moving[track]:
                assert diff.mean() > 0.1
            else:
                assert diff.max() < FLOW_QUANT + 1e-3
            seen[moving[track]] += 1
    assert seen[True] > 0 and seen[False] > 0


def _hashes(root):
    result = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                result[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return result


def test_same_seed_same_bytes_other_seed_other_bytes(world, tmp_path):
    again = tmp_path / "again"
    generate_world(again, sequences=SEQUENCES, frames=FRAMES, width=WIDTH, height=HEIGHT,
                   seed=SEED, progress=False)
    first = _hashes(world[0])
    assert len(first) == SEQUENCES * (5 * FRAMES - 1 + 6) + 1  # + world.json
    assert "world.json" in first
    assert _hashes(again) == first
    other = tmp_path / "other"
    generate_world(other, sequences=1, frames=FRAMES, width=WIDTH, height=HEIGHT, seed=SEED + 1,
                   progress=False)
    other_hashes = _hashes(other)
    rgb = os.path.join("Scene01", "clone", "frames", "rgb", "Camera_0", "rgb_00000.jpg")
    assert other_hashes[rgb] != first[rgb]


def test_scenes_have_moving_and_still_objects_that_occlude():
    for index in range(4):
        scene = sample_scene(sequence_rng(0, index), 4, WIDTH, HEIGHT)
        assert 3 <= len(scene.objects) <= 7
        assert scene.objects[0].moving(0) and not scene.objects[1].moving(0)
    occluded = 0
    for index in range(4):
        scene = sample_scene(sequence_rng(0, index), 2, WIDTH, HEIGHT)
        render = render_frame(scene, 0)
        visible = np.bincount(render["instance"].ravel(), minlength=len(scene.objects) + 1)[1:]
        occluded += int(np.sum((visible > 0) & (visible < render["unoccluded"])))
    assert occluded > 0


def _hand_scene():
    """Camera at the world origin looking along +z (identity extrinsics), 1.5 m above the
    ground, far plane at z = 100; one 4 x 1.5 x 2 m box with yaw 0 (length along x) whose
    bottom centre is at (5, 1.5, 20): it spans x in [3, 7], y in [0, 1.5], z in [19, 21]."""
    flat = WaveTexture(np.full(3, 100.0), np.zeros((1, 2)), np.zeros(1), np.zeros((1, 3)))
    box_texture = WaveTexture(np.full(3, 200.0), np.zeros((1, 3)), np.zeros(1), np.zeros((1, 3)))
    box = SceneObject(0, "Car", "Sedan4Door", "White", np.array([4.0, 1.5, 2.0]),
                      np.array([[5.0, 1.5, 20.0]] * 2), np.zeros(2), box_texture, np.ones(6))
    return Scene(WIDTH, HEIGHT, intrinsics_for_size(WIDTH, HEIGHT), np.tile(np.eye(4), (2, 1, 1)),
                 1.5, 100.0, flat, flat, [box])


def test_ray_casting_hand_computed():
    scene = _hand_scene()
    f, cx, cy = scene.intrinsics[0, 0], scene.intrinsics[0, 2], scene.intrinsics[1, 2]

    def through(x, y, z):  # the pixel whose ray passes through camera point (x, y, z)
        return [cx + f * x / z, cy + f * y / z]

    pixels = np.array([through(5.0, 0.5, 19.0),  # front face z = 19
                       through(3.0, 0.5, 20.0),  # left face x = 3 (front face ends at x = 3)
                       [cx, cy + 30.0],  # ground: Z = f h / 30
                       [cx, cy - 30.0],  # sky direction: far plane
                       through(5.0, 1.5, 25.0)])  # ground behind the box: the box occludes it
    hits = cast_rays(scene, 0, pixels)
    np.testing.assert_allclose(hits["depth"], [19.0, 20.0, f * 1.5 / 30.0, 100.0, 19.0],
                               rtol=1e-12)
    np.testing.assert_array_equal(hits["surface"], [2, 2, 0, 1, 2])
    np.testing.assert_allclose(hits["points"][1], [3.0, 0.5, 20.0], atol=1e-12)
    np.testing.assert_allclose(hits["points"][4], [3.8, 1.14, 19.0], atol=1e-12)
    render = render_frame(scene, 0)
    u, v = np.rint(through(5.0, 0.5, 19.0)).astype(int)
    assert render["instance"][v, u] == 1 and tuple(render["rgb"][v, u]) == (200, 200, 200)
    assert render["instance"][-1, u] == 0 and tuple(render["rgb"][-1, u]) == (100, 100, 100)
    assert render["depth"][-1, u] == pytest.approx(f * 1.5 / (HEIGHT - 1 - cy), rel=1e-12)


def test_euler_angles_round_trip():
    rng = np.random.default_rng(0)
    angles = np.stack([rng.uniform(-1.4, 1.4, 200), rng.uniform(-np.pi, np.pi, 200),
                       rng.uniform(-np.pi, np.pi, 200)], axis=1)
    matrices = euler_angles_to_matrix(torch.from_numpy(angles)).numpy()
    np.testing.assert_allclose(matrix_to_euler_angles(matrices), angles, atol=1e-9)
