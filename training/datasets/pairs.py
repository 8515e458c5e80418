"""Readers for the MASt3R pair mixture, each in the on-disk layout its preprocessing script or release writes.

Every reader is a list of views and a rule that turns a pair index into two view ids; ``view(id)`` returns a typed
``Frame`` (``rgb [H, W, 3]`` uint8, ``depth [H, W]`` float32 z-depth with 0 = invalid, ``K [3, 3]`` in pixels with
integer pixel centres, ``T_world_cam [4, 4]`` OpenCV camera-to-world, ``sky`` where known) and ``pair(index, rng)``
two of them, which ``training.finetune.datasets.PairDataset`` crops, augments and matches.

Layouts of DUSt3R's ``datasets_preprocess/preprocess_<name>.py`` (facts read from naver/dust3r; the readers are our
own code):

============  ============================================================================================
Co3d          ``selected_seqs_<split>.json`` ``{category: {sequence: [frame ids]}}``;
              ``<cat>/<seq>/images/frame<id:06>.jpg`` + ``.npz`` (``camera_intrinsics``, ``camera_pose``
              cam-to-world, ``maximum_depth``); ``depths/frame<id:06>.jpg.geometric.png`` (uint16, depth =
              value / 65535 x maximum_depth); ``masks/frame<id:06>.png``
WildRgbd      as Co3d with ``rgb/<id:05>.jpg``, ``metadata/<id:05>.npz``, ``depth/<id:05>.png`` (mm),
              ``masks/<id:05>.png``
ARKitScenes   ``<Training|Test>/all_metadata.npz`` (``scenes``, ``sceneids``, ``images``, ``intrinsics [N,3,3]``,
              ``trajectories [N,4,4]`` cam-to-world, ``pairs [P,>=2]``); ``<scene>/vga_wide/<image>.jpg``,
              ``<scene>/lowres_depth/<image>.png`` (mm)
ScanNetpp     ``all_metadata.npz`` (same keys; ``intrinsics`` are written in the COLMAP convention, principal
              point + 0.5 px: converted here); ``<scene>/images/<image>.jpg``, ``<scene>/depth/<image>.png`` (mm)
BlendedMVS    ``blendedmvs_pairs.npy`` (records ``seq_high, seq_low, img1, img2, score``; sequence folder =
              ``f"{seq_high:08x}{seq_low:016x}"``, val = ``seq_low % 10 == 0``); ``<seq>/<img:08>.jpg``,
              ``.exr`` depth, ``.npz`` (``intrinsics``, ``R_cam2world``, ``t_cam2world``)
MegaDepth     ``all_metadata.npz`` (``scenes`` = "scene subscene", ``images``, ``pairs`` records ``scene_id,
              im1_id, im2_id, score``; val = scenes 0015 and 0022); ``<scene>/<subscene>/<image>.jpg``,
              ``.exr`` depth, ``.npz`` (``intrinsics``, ``cam2world``)
Habitat       ``Habitat_<size>_scenes_<split>.txt`` lines ``<dir>/<key>``; ``<dir>/<key>_<1..5>.jpeg``,
              ``_depth.exr``, ``_camera_params.json`` (``camera_intrinsics``, ``R_cam2world``, ``t_cam2world``);
              view 1 pairs with one of views 2..5
============  ============================================================================================

Public releases (MASt3R's own preprocessing of these is not published; pairs are frames of one sequence at most
``max_gap`` apart):

- TartanAir: ``<env>/<Easy|Hard>/<P###>/image_left/<i:06>_left.png``, ``depth_left/<i:06>_left_depth.npy``
  (metres), ``pose_left.txt`` (``tx ty tz qx qy qz qw`` per frame, camera body in NED: x forward, y right,
  z down), fixed pinhole fx = fy = 320, cx = 320, cy = 240 at 640 x 480.
- Virtual KITTI 2: ``<Scene>/<variation>/frames/rgb/Camera_<c>/rgb_<i:05>.jpg``,
  ``frames/depth/Camera_<c>/depth_<i:05>.png`` (uint16 cm; 65535 = sky), ``<Scene>/<variation>/intrinsic.txt``
  (``frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]``), ``extrinsic.txt`` (``frame cameraID`` + 16 values of the
  world-to-camera matrix, row-major).
- UnrealStereo4K: ``<scene:05>/Image<c>/<i:05>.png``, ``Disp<c>/<i:05>.npy`` (disparity), ``Extrinsics<c>/<i:05>.txt``
  (``K`` then the 3x4 world-to-camera matrix); depth = baseline x fx / disparity.
- Map-free: ``<split>/<scene>/seq<k>/frame_<i:05>.jpg``, ``intrinsics.txt`` (``seq/frame fx fy cx cy W H``),
  ``poses.txt`` (``seq/frame qw qx qy qz tx ty tz``, world-to-camera). No depth is published: pass
  ``depth_suffix`` to read a user-provided uint16 PNG in mm beside each frame.
- DL3DV: ``<scene>/transforms.json`` (nerfstudio: ``fl_x fl_y cx cy w h``, frames with ``file_path`` and an
  OpenGL camera-to-world ``transform_matrix``). No depth is published (``depth_suffix`` as Map-free).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from pathlib import Path

import numpy as np

from training.datasets.io import LayoutError, clean_depth, read_exr, read_png16, read_rgb, require
from training.finetune.geometry import Frame

logger = logging.getLogger(__name__)

# OpenGL (x right, y up, z backward) -> OpenCV (x right, y down, z forward): flip y and z of the camera axes.
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
# TartanAir camera body (x forward, y right, z down) -> OpenCV: columns are the OpenCV axes in body coordinates.
_NED_TO_CV = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def pose_from_rt(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``[4, 4]`` float64 from a rotation ``[3, 3]`` and translation ``[3]``."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(R, dtype=np.float64)
    T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def quat_to_matrix(q_xyzw) -> np.ndarray:
    """Unit quaternion ``(x, y, z, w)`` -> rotation ``[3, 3]`` (normalised first)."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_quat(np.asarray(q_xyzw, dtype=np.float64)).as_matrix()


def pinhole(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


class PairReader:
    """Base class: views (``view(id, rng)``), pairs (``pair_ids(index, rng)``), a name and a metric flag.

    Subclasses set ``LAYOUT`` (one line: what the root must hold), ``NAME`` and ``METRIC``, fill ``self.n_pairs``
    and implement ``pair_ids`` and ``view``.
    """

    LAYOUT = ""
    NAME = ""
    METRIC = False
    has_depth = True

    def __init__(self, root: str | Path, name: str | None = None, metric: bool | None = None) -> None:
        self.root = Path(root)
        self.name = name or self.NAME
        self.metric = self.METRIC if metric is None else bool(metric)
        if not self.root.is_dir():
            raise LayoutError(f"{self.name}: root {self.root} is not a folder; expected {self.LAYOUT}")
        self.n_pairs = 0

    def require(self, rel: str | Path) -> Path:
        return require(self.root / rel, self.name, self.LAYOUT)

    def __len__(self) -> int:
        return self.n_pairs

    def pair_ids(self, index: int, rng: np.random.Generator) -> tuple[int, int]:
        raise NotImplementedError

    def view(self, view_id: int, rng: np.random.Generator) -> Frame:
        raise NotImplementedError

    def pair(self, index: int, rng: np.random.Generator) -> tuple[Frame, Frame]:
        """The two views of pair ``index`` (``0 <= index < len(self)``)."""
        if not 0 <= index < self.n_pairs:
            raise IndexError(f"{self.name}: pair {index} outside [0, {self.n_pairs})")
        a, b = self.pair_ids(int(index), rng)
        return self.view(a, rng), self.view(b, rng)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, {self.n_pairs} pairs)"


# ---------------------------------------------------------------------------------------------- DUSt3R layouts
class Co3d(PairReader):
    """CO3Dv2 as ``preprocess_co3d.py`` writes it (see the module table).

    Pairs follow DUSt3R: per sequence, frame positions ``(i, j)`` in ``[0, 100)`` with ``0 < |i - j| <= 30`` and
    ``|i - j| % 5 == 0`` (the position jittered by up to 4 and clipped to the sequence), so
    ``len = sequences x 495``.

    Args:
        root: the preprocessed folder.
        split: ``train`` or ``test`` (``selected_seqs_<split>.json``).
        mask_bg: ``True``, ``False`` or ``"rand"``: keep depth only on the object mask (``rand``: for half the
            pairs, both views alike, as DUSt3R).
    """

    LAYOUT = ("selected_seqs_<split>.json and <cat>/<seq>/images/frame<id:06>.jpg|.npz, "
              "depths/frame<id:06>.jpg.geometric.png, masks/frame<id:06>.png (dust3r preprocess_co3d.py)")  # fmt: skip
    NAME = "Co3d"
    METRIC = False
    COMBINATIONS = [(i, j) for i, j in itertools.combinations(range(100), 2) if 0 < abs(i - j) <= 30
                    and abs(i - j) % 5 == 0]  # fmt: skip

    def __init__(self, root, split: str = "train", mask_bg: bool | str = "rand", name=None, metric=None) -> None:
        super().__init__(root, name, metric)
        if mask_bg not in (True, False, "rand"):
            raise LayoutError(f"{self.name}: mask_bg must be True, False or 'rand', got {mask_bg!r}")
        self.mask_bg = mask_bg
        seqs = json.loads(self.require(f"selected_seqs_{split}.json").read_text())
        self.sequences = [((cat, seq), [int(f) for f in frames]) for cat, per in sorted(seqs.items())
                          for seq, frames in sorted(per.items()) if len(frames) > 0]  # fmt: skip
        if not self.sequences:
            raise LayoutError(f"{self.name}: selected_seqs_{split}.json lists no frame; expected {self.LAYOUT}")
        self.n_pairs = len(self.sequences) * len(self.COMBINATIONS)
        self._mask = False

    def _paths(self, cat: str, seq: str, frame: int) -> tuple[Path, Path, Path, Path]:
        """image, camera npz, depth, mask."""
        d = self.root / cat / seq
        name = f"frame{frame:06d}"
        return (d / "images" / f"{name}.jpg", d / "images" / f"{name}.npz",
                d / "depths" / f"{name}.jpg.geometric.png", d / "masks" / f"{name}.png")  # fmt: skip

    def _depth(self, path: Path, meta) -> np.ndarray:
        return read_png16(path) / 65535.0 * float(np.nan_to_num(meta["maximum_depth"]))

    def pair_ids(self, index, rng):
        s, c = divmod(index, len(self.COMBINATIONS))
        frames = self.sequences[s][1]
        last = len(frames) - 1
        ids = [min(max(0, p + int(rng.integers(-4, 5))), last) for p in self.COMBINATIONS[c]]
        return s * 100_000 + ids[0], s * 100_000 + ids[1]  # view id = sequence x 1e5 + position

    def pair(self, index, rng):
        self._mask = self.mask_bg is True or (self.mask_bg == "rand" and bool(rng.integers(0, 2)))
        return super().pair(index, rng)

    def view(self, view_id, rng):
        s, pos = divmod(view_id, 100_000)
        (cat, seq), frames = self.sequences[s]
        img, cam, dep, mask = self._paths(cat, seq, frames[pos])
        with np.load(require(cam, self.name, self.LAYOUT)) as meta:
            K = np.asarray(meta["camera_intrinsics"], dtype=np.float64)
            T = np.asarray(meta["camera_pose"], dtype=np.float64)
            depth = self._depth(require(dep, self.name, self.LAYOUT), meta)
        if self._mask:
            depth = depth * (read_png16(require(mask, self.name, self.LAYOUT)) / 255.0 > 0.1)
        return Frame(read_rgb(require(img, self.name, self.LAYOUT)), clean_depth(depth), K, T)


class WildRgbd(Co3d):
    """WildRGB-D as ``preprocess_wildrgbd.py`` writes it: the Co3d layout with 5-digit names and depth in mm."""

    LAYOUT = ("selected_seqs_<split>.json and <cat>/<seq>/rgb/<id:05>.jpg, metadata/<id:05>.npz, "
              "depth/<id:05>.png (mm), masks/<id:05>.png (dust3r preprocess_wildrgbd.py)")  # fmt: skip
    NAME = "WildRgbd"
    METRIC = True  # MASt3R: is_metric_scale = True

    def _paths(self, cat, seq, frame):
        d = self.root / cat / seq
        return (d / "rgb" / f"{frame:05d}.jpg", d / "metadata" / f"{frame:05d}.npz", d / "depth" / f"{frame:05d}.png",
                d / "masks" / f"{frame:05d}.png")  # fmt: skip

    def _depth(self, path, meta):
        return read_png16(path) / 1000.0


class _MetadataPairs(PairReader):
    """ARKitScenes / ScanNet++: one ``all_metadata.npz`` with every view's camera and the selected pairs."""

    METRIC = True  # MASt3R: is_metric_scale = True for both
    IMAGE_DIR, DEPTH_DIR = "", ""
    COLMAP_K = False

    def _load(self, folder: Path) -> None:
        self.folder = folder
        path = require(folder / "all_metadata.npz", self.name, self.LAYOUT)
        with np.load(path) as data:
            missing = {"scenes", "sceneids", "images", "intrinsics", "trajectories", "pairs"} - set(data.files)
            if missing:
                raise LayoutError(f"{self.name}: {path} lacks {sorted(missing)}; expected {self.LAYOUT}")
            self.scenes = [str(s) for s in data["scenes"]]
            self.sceneids = data["sceneids"].astype(np.int64)
            self.images = [str(s) for s in data["images"]]
            self.intrinsics = data["intrinsics"].astype(np.float64)
            self.trajectories = data["trajectories"].astype(np.float64)
            self.pairs = data["pairs"][:, :2].astype(np.int64)
        self.n_pairs = len(self.pairs)

    def pair_ids(self, index, rng):
        return int(self.pairs[index, 0]), int(self.pairs[index, 1])

    def _names(self, image: str) -> tuple[str, str]:
        raise NotImplementedError

    def view(self, view_id, rng):
        scene = self.folder / self.scenes[self.sceneids[view_id]]
        image, depth = self._names(self.images[view_id])
        K = self.intrinsics[view_id].copy()
        if self.COLMAP_K:  # COLMAP puts pixel centres at +0.5; ours (OpenCV) at integers
            K[0, 2] -= 0.5
            K[1, 2] -= 0.5
        depth = read_png16(require(scene / self.DEPTH_DIR / depth, self.name, self.LAYOUT)) / 1000.0
        rgb = read_rgb(require(scene / self.IMAGE_DIR / image, self.name, self.LAYOUT))
        return Frame(rgb, clean_depth(depth), K, self.trajectories[view_id].copy())


class ArkitScenes(_MetadataPairs):
    """ARKitScenes as ``preprocess_arkitscenes.py`` writes it (``split``: ``train`` -> ``Training``, ``test``)."""

    LAYOUT = ("<Training|Test>/all_metadata.npz and <scene>/vga_wide/<image>.jpg, <scene>/lowres_depth/<image>.png "
              "(dust3r preprocess_arkitscenes.py)")  # fmt: skip
    NAME = "ARKitScenes"
    IMAGE_DIR, DEPTH_DIR = "vga_wide", "lowres_depth"

    def __init__(self, root, split: str = "train", name=None, metric=None) -> None:
        super().__init__(root, name, metric)
        folders = {"train": "Training", "test": "Test"}
        if split not in folders:
            raise LayoutError(f"{self.name}: split must be train or test, got {split!r}")
        self._load(self.root / folders[split])

    def _names(self, image):
        return image.replace(".png", ".jpg"), image


class ScanNetpp(_MetadataPairs):
    """ScanNet++ as ``preprocess_scannetpp.py`` writes it (train split only, as DUSt3R)."""

    LAYOUT = ("all_metadata.npz and <scene>/images/<image>.jpg, <scene>/depth/<image>.png "
              "(dust3r preprocess_scannetpp.py)")  # fmt: skip
    NAME = "ScanNetpp"
    IMAGE_DIR, DEPTH_DIR = "images", "depth"
    COLMAP_K = True

    def __init__(self, root, split: str = "train", name=None, metric=None) -> None:
        super().__init__(root, name, metric)
        if split != "train":
            raise LayoutError(f"{self.name}: the preprocessed ScanNet++ has a train split only, got {split!r}")
        self._load(self.root)

    def _names(self, image):
        return image + ".jpg", image + ".png"


class _RecordPairs(PairReader):
    """Pairs as records of a structured array; views ``2k`` and ``2k + 1`` are pair ``k``'s two images, each stored
    as ``<img>.jpg`` + ``<img>.exr`` (depth) + ``<img>.npz`` (``intrinsics`` and a pose, see ``_pose``)."""

    def _select(self, pairs: np.ndarray, in_val: np.ndarray, split: str | None) -> None:
        if split == "train":
            pairs = pairs[~in_val]
        elif split == "val":
            pairs = pairs[in_val]
        elif split is not None:
            raise LayoutError(f"{self.name}: split must be train, val or None, got {split!r}")
        self.pairs = pairs
        self.n_pairs = len(pairs)

    def pair_ids(self, index, rng):
        return index * 2, index * 2 + 1

    def _locate(self, view_id: int) -> tuple[Path, str]:
        """Folder and file stem of a view."""
        raise NotImplementedError

    def _pose(self, cam) -> np.ndarray:
        raise NotImplementedError

    def view(self, view_id, rng):
        d, img = self._locate(view_id)
        with np.load(require(d / f"{img}.npz", self.name, self.LAYOUT)) as cam:
            K = np.asarray(cam["intrinsics"], dtype=np.float64)
            T = self._pose(cam)
        depth = read_exr(require(d / f"{img}.exr", self.name, self.LAYOUT))
        return Frame(read_rgb(require(d / f"{img}.jpg", self.name, self.LAYOUT)), clean_depth(depth), K, T)


class BlendedMvs(_RecordPairs):
    """BlendedMVS as ``preprocess_blendedMVS.py`` writes it (``split``: train, val or None for all)."""

    LAYOUT = "blendedmvs_pairs.npy and <seq>/<img:08>.jpg|.exr|.npz (dust3r preprocess_blendedMVS.py)"
    NAME = "BlendedMVS"

    def __init__(self, root, split: str | None = "train", name=None, metric=None) -> None:
        super().__init__(root, name, metric)
        pairs = np.load(self.require("blendedmvs_pairs.npy"))
        self._select(pairs, (pairs["seq_low"] % 10) == 0, split)

    def _locate(self, view_id):
        p = self.pairs[view_id // 2]
        seq = f"{int(p['seq_high']):08x}{int(p['seq_low']):016x}"
        return self.root / seq, f"{int(p['img1'] if view_id % 2 == 0 else p['img2']):08d}"

    def _pose(self, cam):
        return pose_from_rt(cam["R_cam2world"], cam["t_cam2world"])


class MegaDepth(_RecordPairs):
    """MegaDepth as DUSt3R's ``preprocess_megadepth.py`` and its pair file give it (val: scenes 0015, 0022)."""

    LAYOUT = ("all_metadata.npz (scenes, images, pairs) and <scene>/<subscene>/<image>.jpg|.exr|.npz "
              "(dust3r preprocess_megadepth.py)")  # fmt: skip
    NAME = "MegaDepth"
    VAL_SCENES = ("0015", "0022")

    def __init__(self, root, split: str | None = "train", name=None, metric=None) -> None:
        super().__init__(root, name, metric)
        with np.load(self.require("all_metadata.npz")) as data:
            self.scenes = [str(s) for s in data["scenes"]]
            self.images = [str(s) for s in data["images"]]
            pairs = data["pairs"]
        is_val = np.array([s.startswith(self.VAL_SCENES) for s in self.scenes], dtype=bool)
        self._select(pairs, is_val[pairs["scene_id"].astype(np.int64)], split)

    def _locate(self, view_id):
        p = self.pairs[view_id // 2]
        scene, subscene = self.scenes[int(p["scene_id"])].split()
        return self.root / scene / subscene, self.images[int(p["im1_id"] if view_id % 2 == 0 else p["im2_id"])]

    def _pose(self, cam):
        return np.asarray(cam["cam2world"], dtype=np.float64)


class Habitat(PairReader):
    """Habitat renders as DUSt3R's ``datasets_preprocess/habitat`` writes them: 5 views per key."""

    LAYOUT = ("Habitat_<size>_scenes_<split>.txt and <dir>/<key>_<1..5>.jpeg, _depth.exr, _camera_params.json "
              "(dust3r datasets_preprocess/habitat)")  # fmt: skip
    NAME = "Habitat"

    def __init__(self, root, size: int | str = 1_000_000, split: str = "train", name=None, metric=None) -> None:
        super().__init__(root, name, metric)
        self.scenes = [s for s in self.require(f"Habitat_{size}_scenes_{split}.txt").read_text().splitlines() if s]
        self.n_pairs = len(self.scenes)

    def pair_ids(self, index, rng):
        return index * 5, index * 5 + int(rng.integers(1, 5))  # view 1 overlaps every other view

    def view(self, view_id, rng):
        scene, k = divmod(view_id, 5)
        base = self.root / f"{self.scenes[scene]}_{k + 1}"
        cam = json.loads(require(Path(f"{base}_camera_params.json"), self.name, self.LAYOUT).read_text())
        K = np.asarray(cam["camera_intrinsics"], dtype=np.float64)
        T = pose_from_rt(cam["R_cam2world"], cam["t_cam2world"])
        depth = read_exr(require(Path(f"{base}_depth.exr"), self.name, self.LAYOUT))
        return Frame(read_rgb(require(Path(f"{base}.jpeg"), self.name, self.LAYOUT)), clean_depth(depth), K, T)


# ---------------------------------------------------------------------------------------------- public releases
class _SequencePairs(PairReader):
    """Views grouped in ordered sequences; pair ``index`` = view ``index`` and another view at most ``max_gap``
    positions away in its sequence (uniformly, never itself unless the sequence has one view)."""

    def _set_sequences(self, lengths: list[int], max_gap: int) -> None:
        if not lengths or sum(lengths) == 0:
            raise LayoutError(f"{self.name}: no frame found under {self.root}; expected {self.LAYOUT}")
        self.max_gap = max(1, int(max_gap))
        starts = np.cumsum([0, *lengths])
        self.bounds = np.repeat(np.stack([starts[:-1], starts[1:]], 1), lengths, axis=0)  # [V, 2] per view
        self.n_pairs = int(starts[-1])

    def pair_ids(self, index, rng):
        start, end = self.bounds[index]
        lo, hi = max(start, index - self.max_gap), min(end - 1, index + self.max_gap)
        if hi == lo:
            return index, index
        j = int(rng.integers(lo, hi))
        return index, j + (j >= index)


class TartanAir(_SequencePairs):
    """TartanAir (v1) trajectories as published; ``sky_depth``: depths at or beyond it are sky (TartanAir encodes
    the sky as very far geometry)."""

    LAYOUT = ("<env>/<Easy|Hard>/<P###>/image_left/<i:06>_left.png, depth_left/<i:06>_left_depth.npy, "
              "pose_left.txt (TartanAir release)")  # fmt: skip
    NAME = "TartanAir"
    METRIC = True  # rendered in metres; MASt3R's flag for this set is not published
    K = pinhole(320.0, 320.0, 320.0, 240.0)

    def __init__(self, root, max_gap: int = 10, sky_depth: float = 1000.0, name=None, metric=None) -> None:
        super().__init__(root, name, metric)
        self.sky_depth = float(sky_depth)
        self.frames: list[tuple[Path, int, np.ndarray]] = []
        lengths = []
        for pose_file in sorted(self.root.glob("*/*/*/pose_left.txt")):
            poses = np.loadtxt(pose_file, ndmin=2)
            traj = pose_file.parent
            for i, row in enumerate(poses):
                T = pose_from_rt(quat_to_matrix(row[3:7]) @ _NED_TO_CV, row[:3])
                self.frames.append((traj, i, T))
            lengths.append(len(poses))
        self._set_sequences(lengths, max_gap)

    def view(self, view_id, rng):
        traj, i, T = self.frames[view_id]
        depth = np.load(require(traj / "depth_left" / f"{i:06d}_left_depth.npy", self.name, self.LAYOUT))
        sky = depth >= self.sky_depth
        depth = np.where(sky, 0.0, depth)
        rgb = read_rgb(require(traj / "image_left" / f"{i:06d}_left.png", self.name, self.LAYOUT))
        return Frame(rgb, clean_depth(depth), self.K.copy(), T.copy(), sky=sky)


class VirtualKitti(_SequencePairs):
    """Virtual KITTI 2 as published (every scene, variation and camera is one sequence)."""

    LAYOUT = ("<Scene>/<variation>/intrinsic.txt, extrinsic.txt and frames/rgb/Camera_<c>/rgb_<i:05>.jpg, "
              "frames/depth/Camera_<c>/depth_<i:05>.png (Virtual KITTI 2 release)")  # fmt: skip
    NAME = "VirtualKitti"
    METRIC = True  # depth in cm; MASt3R's flag for this set is not published

    def __init__(self, root, max_gap: int = 10, cameras: tuple[int, ...] = (0, 1), name=None, metric=None) -> None:
        super().__init__(root, name, metric)
        self.frames: list[tuple[Path, int, int, np.ndarray, np.ndarray]] = []
        lengths = []
        for intr_file in sorted(self.root.glob("*/*/intrinsic.txt")):
            folder = intr_file.parent
            intr = np.loadtxt(intr_file, skiprows=1, ndmin=2)
            extr = np.loadtxt(require(folder / "extrinsic.txt", self.name, self.LAYOUT), skiprows=1, ndmin=2)
            K_of = {(int(r[0]), int(r[1])): pinhole(*r[2:6]) for r in intr}
            for cam in cameras:
                rows = [r for r in extr if int(r[1]) == cam]
                for r in rows:
                    T_cam_world = r[2:18].reshape(4, 4)
                    self.frames.append((folder, cam, int(r[0]), K_of[(int(r[0]), cam)], np.linalg.inv(T_cam_world)))
                if rows:
                    lengths.append(len(rows))
        self._set_sequences(lengths, max_gap)

    def view(self, view_id, rng):
        folder, cam, i, K, T = self.frames[view_id]
        raw = read_png16(require(folder / "frames" / "depth" / f"Camera_{cam}" / f"depth_{i:05d}.png", self.name,
                                 self.LAYOUT))  # fmt: skip
        sky = raw >= 65535  # the far plane: sky
        depth = np.where(sky, 0.0, raw / 100.0)
        rgb = read_rgb(require(folder / "frames" / "rgb" / f"Camera_{cam}" / f"rgb_{i:05d}.jpg", self.name,
                               self.LAYOUT))  # fmt: skip
        return Frame(rgb, clean_depth(depth), K.copy(), T.copy(), sky=sky)


class UnrealStereo4K(_SequencePairs):
    """UnrealStereo4K (SMD-Nets release): each scene's left and right cameras are two sequences.

    ``<scene:05>/Image<c>/<i:05>.png``, ``Disp<c>/<i:05>.npy`` (disparity in pixels) and ``Extrinsics<c>/<i:05>.txt``
    (line 1: the 9 values of ``K``; line 2: the 12 values of the 3x4 world-to-camera matrix, as third-party
    preprocessing scripts read them; the release's own documentation was not available). Depth is
    ``baseline x fx / disparity`` with the baseline the distance between the two cameras of the frame; the scene
    units are Unreal's, so the set is not marked metric.
    """

    LAYOUT = ("<scene:05>/Image<0|1>/<i:05>.png, Disp<0|1>/<i:05>.npy, Extrinsics<0|1>/<i:05>.txt "
              "(UnrealStereo4K release)")  # fmt: skip
    NAME = "UnrealStereo4K"

    def __init__(self, root, max_gap: int = 10, name=None, metric=None) -> None:
        super().__init__(root, name, metric)
        self.frames: list[tuple[Path, int, int]] = []
        lengths = []
        for scene in sorted(p for p in self.root.iterdir() if (p / "Extrinsics0").is_dir()):
            for cam in (0, 1):
                ids = sorted(int(f.stem) for f in (scene / f"Image{cam}").glob("*.png") if f.stem.isdigit())
                self.frames += [(scene, cam, i) for i in ids]
                if ids:
                    lengths.append(len(ids))
        self._set_sequences(lengths, max_gap)

    def _camera(self, scene: Path, cam: int, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``K`` and ``T_world_cam`` of camera ``cam`` at frame ``i``."""
        lines = _lines(require(scene / f"Extrinsics{cam}" / f"{i:05d}.txt", self.name, self.LAYOUT))
        K = np.asarray(lines[0].split(), dtype=np.float64).reshape(3, 3)
        T_cam_world = np.eye(4)
        T_cam_world[:3] = np.asarray(lines[1].split(), dtype=np.float64).reshape(3, 4)
        return K, np.linalg.inv(T_cam_world)

    def view(self, view_id, rng):
        scene, cam, i = self.frames[view_id]
        K, T = self._camera(scene, cam, i)
        _, T_other = self._camera(scene, 1 - cam, i)
        baseline = float(np.linalg.norm(T[:3, 3] - T_other[:3, 3]))
        disp = np.load(require(scene / f"Disp{cam}" / f"{i:05d}.npy", self.name, self.LAYOUT)).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = np.where(disp > 0, baseline * K[0, 0] / disp, 0.0)
        rgb = read_rgb(require(scene / f"Image{cam}" / f"{i:05d}.png", self.name, self.LAYOUT))
        return Frame(rgb, clean_depth(depth), K, T)


class _UserDepth(_SequencePairs):
    """Sets published without depth: ``depth_suffix`` names a uint16 PNG (mm) beside each frame, replacing the
    image suffix (e.g. ``.depth.png``); without it the reader gives images and cameras only (``has_depth`` False).
    Subclasses fill ``self.frames`` with ``(image path, K, T_world_cam)``."""

    def __init__(self, root, depth_suffix: str, name=None, metric=None) -> None:
        super().__init__(root, name, metric)
        self.depth_suffix = depth_suffix
        self.has_depth = bool(depth_suffix)
        self.frames: list[tuple[Path, np.ndarray, np.ndarray]] = []

    def view(self, view_id, rng):
        path, K, T = self.frames[view_id]
        rgb = read_rgb(require(path, self.name, self.LAYOUT))
        if not self.depth_suffix:
            return Frame(rgb, np.zeros(rgb.shape[:2], np.float32), K.copy(), T.copy())
        dpath = path.with_name(path.stem + self.depth_suffix)
        depth = read_png16(require(dpath, self.name, f"{self.LAYOUT} plus <frame>{self.depth_suffix}")) / 1e3
        return Frame(rgb, clean_depth(depth), K.copy(), T.copy())


class MapFree(_UserDepth):
    """Niantic Map-free relocalisation as published (each ``seq<k>`` of a scene is one sequence)."""

    LAYOUT = "<split>/<scene>/intrinsics.txt, poses.txt and seq<k>/frame_<i:05>.jpg (Map-free release)"
    NAME = "NianticMapFree"
    METRIC = True  # the release's poses are metric

    def __init__(self, root, split: str = "train", max_gap: int = 10, depth_suffix: str = "", name=None,
                 metric=None) -> None:  # fmt: skip
        super().__init__(root, depth_suffix, name, metric)
        lengths = []
        base = self.require(split)
        for scene in sorted(p for p in base.iterdir() if (p / "poses.txt").is_file()):
            intr = {ln.split()[0]: [float(v) for v in ln.split()[1:]] for ln in _lines(scene / "intrinsics.txt")}
            per_seq: dict[str, list] = {}
            for ln in _lines(scene / "poses.txt"):
                name, *vals = ln.split()
                qw, qx, qy, qz, tx, ty, tz = (float(v) for v in vals)
                T_cam_world = pose_from_rt(quat_to_matrix([qx, qy, qz, qw]), [tx, ty, tz])
                fx, fy, cx, cy = intr[name][:4]
                per_seq.setdefault(name.split("/")[0], []).append(
                    (scene / name, pinhole(fx, fy, cx, cy), np.linalg.inv(T_cam_world))
                )
            for seq in sorted(per_seq):
                frames = sorted(per_seq[seq], key=lambda f: f[0].name)
                self.frames += frames
                lengths.append(len(frames))
        self._set_sequences(lengths, max_gap)


class Dl3dv(_UserDepth):
    """DL3DV-10K scenes as published (nerfstudio ``transforms.json``; each scene is one sequence)."""

    LAYOUT = "<scene>/transforms.json (nerfstudio) and the images it names (DL3DV release)"
    NAME = "DL3DV"
    METRIC = False  # COLMAP reconstructions: arbitrary scale

    def __init__(self, root, max_gap: int = 10, depth_suffix: str = "", name=None, metric=None) -> None:
        super().__init__(root, depth_suffix, name, metric)
        lengths = []
        for tf in sorted(self.root.glob("*/transforms.json")):
            meta = json.loads(tf.read_text())
            frames = []
            for fr in meta["frames"]:
                fx, fy, cx, cy = (fr.get(k, meta.get(k)) for k in ("fl_x", "fl_y", "cx", "cy"))  # per-frame wins
                # nerfstudio's principal point uses the continuous convention (pixel centres at +0.5).
                K = pinhole(fx, fy, cx - 0.5, cy - 0.5)
                T = np.asarray(fr["transform_matrix"], dtype=np.float64) @ _GL_TO_CV
                frames.append((tf.parent / fr["file_path"], K, T))
            frames.sort(key=lambda f: _natural(f[0].name))
            self.frames += frames
            lengths.append(len(frames))
        self._set_sequences(lengths, max_gap)


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


# Names as the MASt3R README writes them (and short aliases) -> reader.
READERS: dict[str, type[PairReader]] = {
    "Co3d": Co3d,
    "WildRgbd": WildRgbd,
    "ARKitScenes": ArkitScenes,
    "ScanNetpp": ScanNetpp,
    "BlendedMVS": BlendedMvs,
    "MegaDepth": MegaDepth,
    "Habitat": Habitat,
    "Habitat512": Habitat,
    "TartanAir": TartanAir,
    "VirtualKitti": VirtualKitti,
    "UnrealStereo4K": UnrealStereo4K,
    "NianticMapFree": MapFree,
    "MapFree": MapFree,
    "DL3DV": Dl3dv,
}
