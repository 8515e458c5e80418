"""Image lists of DUNE's 19 distillation datasets, in the layouts their releases (or DUSt3R's preprocessing) write.

DUNE reads images only (no labels, no cameras). ``release_files(name, root)`` lists a dataset's training images
with the glob patterns below, so depth maps, masks and camera files that share the folders (16-bit PNG depth of
ARKitScenes, ScanNet++, Co3d...) are never taken for images. Facts from naver/dune ``data/*.py`` and the dataset
releases; DUNE reads the ImageNet-19K and MASt3R-domain lists from pickles, which recon never unpickles: give a
text ``file_list`` instead (one path per line, relative to the root) when a layout here does not fit.

=================  ===========================================================================================
in19k              ``<wnid>/<image>.JPEG`` (ImageNet-21K-style class folders)
gldv2              ``train/<a>/<b>/<c>/<id>.jpg`` (Google Landmarks v2 release; DUNE: ImageFolder on ``train``);
                   named by ``train.csv`` when the root holds it
mapillarystreet    ``train_val/**/*.jpg`` (Mapillary Street-Level Sequences)
bedlam             ``training/**/*.png`` (images whose path contains ``closeup`` are rotated by -90 degrees)
agora              ``train/*`` (one folder)
cuffs              ``*`` (one folder; no validation split)
ubody              ``videos/**/*.jpg|png`` (DUNE lists them from ``ubody_intra_train.pkl``: use a file_list)
MASt3R sets        the image files of the layouts in ``training.datasets.pairs`` (e.g. ``*/*/vga_wide/*.jpg``)
=================  ===========================================================================================
"""

from __future__ import annotations

from pathlib import Path

from training.common.data import IMAGE_EXTENSIONS
from training.datasets.io import LayoutError

_IMAGES = tuple(e for e in IMAGE_EXTENSIONS)

# name -> (glob patterns relative to the root, one-line description of the layout)
RELEASE_LAYOUTS: dict[str, tuple[tuple[str, ...], str]] = {
    "in19k": (("*/*",), "<wnid>/<image>.JPEG class folders"),
    "gldv2": (("train/*/*/*/*.jpg",), "train/<a>/<b>/<c>/<id>.jpg (Google Landmarks v2)"),
    "mapillarystreet": (("train_val/**/*",), "train_val/<city>/.../*.jpg (Mapillary SLS)"),
    "bedlam": (("training/**/*.png",), "training/**/*.png (BEDLAM)"),
    "agora": (("train/*",), "train/<image> (AGORA)"),
    "cuffs": (("*",), "<image> files in one folder (CUFFS)"),
    "ubody": (("videos/**/*",), "videos/**/<frame> (UBody)"),
    "ARKitScenesV2": (("*/*/vga_wide/*.jpg",), "<split>/<scene>/vga_wide/*.jpg (dust3r preprocess_arkitscenes)"),
    "BlendedMVS": (("*/*.jpg",), "<seq>/<img>.jpg (dust3r preprocess_blendedMVS)"),
    "Co3d_v3": (("*/*/images/*.jpg",), "<cat>/<seq>/images/frame*.jpg (dust3r preprocess_co3d)"),
    "DL3DV": (("*/images*/*",), "<scene>/images*/frame_*.png (DL3DV release)"),
    "Habitat512": (("**/*.jpeg",), "<dir>/<key>_<n>.jpeg (dust3r habitat renders)"),
    "MegaDepthDense": (("*/*/*.jpg",), "<scene>/<subscene>/<image>.jpg (dust3r preprocess_megadepth)"),
    "Niantic": (("*/*/seq*/*.jpg",), "<split>/<scene>/seq<k>/frame_*.jpg (Map-free release)"),
    "ScanNetppV2": (("*/images/*.jpg",), "<scene>/images/*.jpg (dust3r preprocess_scannetpp)"),
    "TartanAir": (("*/*/*/image_left/*.png",), "<env>/<level>/<P###>/image_left/*.png (TartanAir)"),
    "Unreal4K": (("*/Image0/*.png", "*/Image1/*.png"), "<scene:05>/Image<0|1>/<i:05>.png (UnrealStereo4K)"),
    "VirtualKitti": (("*/*/frames/rgb/*/*.jpg",), "<Scene>/<variation>/frames/rgb/Camera_<c>/*.jpg (VKITTI 2)"),
    "WildRgb": (("*/*/rgb/*.jpg",), "<cat>/<seq>/rgb/*.jpg (dust3r preprocess_wildrgbd)"),
}


def release_files(name: str, root: str | Path) -> list[Path]:
    """The training images of paper dataset ``name`` under ``root``, sorted.

    Raises:
        KeyError: ``name`` has no known layout (the caller falls back to a plain folder).
        LayoutError: the root is not a folder, or no image matches the layout (the message names it).
    """
    patterns, description = RELEASE_LAYOUTS[name]
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{name}: root {root} is not a folder; expected {description}")
    if name == "gldv2" and (root / "train.csv").is_file():
        return gldv2_from_csv(root)
    files = sorted({p for pat in patterns for p in root.glob(pat)
                    if p.is_file() and p.suffix.lower() in _IMAGES and not p.name.startswith(".")})  # fmt: skip
    if not files:
        raise LayoutError(f"{name}: no image under {root}; expected {description} (or set layout 'folder')")
    return files


def bedlam_loader(path: str):
    """BEDLAM's images, with the ``closeup`` renders turned upright (DUNE rotates them by -90 degrees; it keeps the
    canvas size, which crops a non-square image: here the canvas follows the rotation).

    The marker is looked for in the last four path components (``<scene>/png/<sequence>/<frame>.png``), not in the
    whole path as DUNE does, so a root folder whose name contains "closeup" does not rotate everything.
    """
    from training.common.data import load_rgb

    image = load_rgb(path)
    return image.rotate(-90, expand=True) if any("closeup" in part for part in Path(path).parts[-4:]) else image


def gldv2_from_csv(root: Path) -> list[Path]:
    """Google Landmarks v2 images named by the release's ``train.csv`` (``id,url,landmark_id``): image ``id`` is
    ``train/<id[0]>/<id[1]>/<id[2]>/<id>.jpg``; no walk over the 4.1 M files. Ids whose file is absent are kept
    (the training loader skips and counts unreadable images)."""
    import csv

    with open(root / "train.csv", newline="") as f:
        rows = csv.DictReader(f)
        if rows.fieldnames is None or "id" not in rows.fieldnames:
            raise LayoutError(
                f"gldv2: {root / 'train.csv'} has no 'id' column; expected the release's id,url,landmark_id"
            )
        ids = [r["id"] for r in rows if len(r["id"]) >= 3]
    if not ids:
        raise LayoutError(f"gldv2: {root / 'train.csv'} lists no image")
    return [root / "train" / i[0] / i[1] / i[2] / f"{i}.jpg" for i in ids]
