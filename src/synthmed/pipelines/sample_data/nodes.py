"""Nodes of the ``sample_data`` pipeline: real images from installed packages, no network.

The sources are package data (nilearn, pydicom, scikit-image), so building the sample is
deterministic and offline. Provenance and licences are written to the sample's README.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from synthmed.core.checksums import sha256_bytes
from synthmed.datasets.file_folder import encode
from synthmed.datasets.secrets import PUBLIC_SAMPLE_MANIFEST

logger = logging.getLogger(__name__)

# Tissue labels of the brain sample's label volume.
TISSUE_LABELS = {0: "background", 1: "grey_matter", 2: "white_matter", 3: "other_brain"}
DICOM_FILES = ("CT_small.dcm", "MR_small.dcm", "MR_truncated.dcm")
LABEL_COLUMNS = ["path", "label", "modality", "patient"]


def build_brain_sample(params: dict[str, Any]) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """MNI ICBM152 2009a T1 template and a tissue label volume, from nilearn's package data.

    Args:
        params: ``tissue_threshold`` (probability above which a voxel is grey or white
            matter; the larger of the two wins).

    Returns:
        ``(t1, labels)``: the T1 volume (1 mm, 197x233x189, as shipped) and a uint8 volume
        with ``TISSUE_LABELS`` (background / grey matter / white matter / other brain).
    """
    from nilearn import datasets

    threshold = float(params["tissue_threshold"])
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"sample_data.brain.tissue_threshold must be in (0, 1), got {threshold}.")
    t1 = datasets.load_mni152_template(resolution=1)
    grey = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    white = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    brain = datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32) > 0
    labels = np.zeros(t1.shape, dtype=np.uint8)
    labels[brain] = 3
    labels[(grey >= threshold) & (grey >= white)] = 1
    labels[(white >= threshold) & (white > grey)] = 2
    t1_data = np.asarray(t1.dataobj)
    t1_out = nib.Nifti1Image(t1_data, t1.affine)
    label_out = nib.Nifti1Image(labels, t1.affine)
    for image in (t1_out, label_out):
        image.header.set_xyzt_units("mm")
    counts = {TISSUE_LABELS[v]: int(n) for v, n in zip(*np.unique(labels, return_counts=True))}
    logger.info("Brain sample: T1 %s, tissue voxels %s", t1.shape, counts)
    return t1_out, label_out


def build_fundus_sample(params: dict[str, Any]) -> tuple[dict[str, Any], pd.DataFrame]:
    """Fundus photographs derived from scikit-image's bundled ``retina.jpg``, with vessel pseudo-labels.

    The photograph is cut into non-overlapping source regions, each augmented ``per_region``
    times (``synthmed.imaging.fundus_sample``); the original is not copied, since it shares
    its vessels with every region.

    Args:
        params: ``synthmed.imaging.fundus_sample.FundusSampleConfig`` keys.

    Returns:
        ``(files, rows)``: ``fundus/<name>.png`` (RGB), ``fundus/<name>_mask.png`` (255 =
        vessel) and ``fundus/photographs.json`` (each photograph's region and random draws);
        and the photographs' ``labels.csv`` rows (``path, label, modality, patient``).
    """
    import skimage.data

    from synthmed.core.config import from_params
    from synthmed.imaging.fundus_sample import FundusSampleConfig, build_fundus_photos

    config = from_params(FundusSampleConfig, params, "sample_data.fundus")
    photos = build_fundus_photos(skimage.data.retina(), config)
    files: dict[str, Any] = {}
    provenance = []
    for photo in photos:
        files[f"fundus/{photo.name}.png"] = photo.rgb
        files[f"fundus/{photo.name}_mask.png"] = photo.mask * np.uint8(255)
        provenance.append({"path": f"fundus/{photo.name}.png", "region": photo.region, "copy": photo.index,
                           "angle_deg": round(photo.angle_deg, 4), "zoom": round(photo.zoom, 4),
                           "flipped": photo.flipped, "gamma": round(photo.gamma, 4),
                           "brightness": round(photo.brightness, 4)})
    # The group key travels in photographs.json (ingestion ignores *.json): every photograph is
    # of the same eye, so labels.csv gives them one patient.
    files["fundus/photographs.json"] = {"source": "skimage.data.retina()", "grid": config.grid,
                                        "seed": config.seed, "photographs": provenance}
    rows = pd.DataFrame([(f"fundus/{p.name}.png", "fundus", "OP", "retina") for p in photos],
                        columns=["path", "label", "modality", "patient"])
    return files, rows


def collect_dicom_samples() -> dict[str, bytes]:
    """pydicom's bundled CT_small, MR_small and MR_truncated files, byte for byte.

    They carry (fictitious) patient names, ids and dates: the de-identification demo.
    MR_truncated has short pixel data: the ingestion pipeline must quarantine it.
    """
    from pydicom.data import get_testdata_file

    return {name: Path(get_testdata_file(name)).read_bytes() for name in DICOM_FILES}


def assemble_sample_folder(
    t1: nib.Nifti1Image,
    tissue: nib.Nifti1Image,
    fundus_files: dict[str, Any],
    fundus_rows: pd.DataFrame,
    dicom_files: dict[str, bytes],
    readme: str,
) -> dict[str, bytes]:
    """The files of data/01_raw/sample as bytes, with labels.csv and a checksum manifest.

    ``SAMPLE_MANIFEST.json`` lists the sha256 of every file; the pseudonymisation key
    dataset uses it to recognise the untouched public sample (see
    ``synthmed.datasets.secrets.is_public_sample``).
    """
    files: dict[str, Any] = {
        "brain/mni152_t1.nii.gz": t1,
        "brain/mni152_t1_mask.nii.gz": tissue,
        **fundus_files,
        **{f"dicom/{name}": data for name, data in dicom_files.items()},
        "labels.csv": pd.concat([
            pd.DataFrame([("brain/mni152_t1.nii.gz", "brain_t1", "MR", "mni152")], columns=LABEL_COLUMNS),
            fundus_rows[LABEL_COLUMNS],
            pd.DataFrame([(f"dicom/{name}", "ct" if name.startswith("CT") else "mr", "", "") for name in DICOM_FILES],
                         columns=LABEL_COLUMNS),
        ], ignore_index=True),
        "README.md": readme,
    }
    encoded = {name: encode(name, obj) for name, obj in files.items()}
    encoded[PUBLIC_SAMPLE_MANIFEST] = encode(
        PUBLIC_SAMPLE_MANIFEST,
        {"sha256": {name: sha256_bytes(data) for name, data in encoded.items()}},
    )
    return encoded
