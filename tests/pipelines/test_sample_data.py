"""The bundled sample: real images from installed packages, deterministic, with a checksum manifest."""

from __future__ import annotations

import hashlib
import io
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from synthmed.datasets.secrets import PUBLIC_SAMPLE_MANIFEST
from synthmed.pipelines.sample_data.nodes import (
    TISSUE_LABELS,
    assemble_sample_folder,
    build_brain_sample,
    collect_dicom_samples,
)


@pytest.fixture(scope="module")
def brain():
    return build_brain_sample({"tissue_threshold": 0.5})


def test_brain_sample_is_the_mni_template_with_tissue_labels(brain):
    t1, tissue = brain
    assert t1.shape == tissue.shape == (197, 233, 189)  # MNI152 2009a at 1 mm, as shipped by nilearn
    labels = np.asarray(tissue.dataobj)
    assert set(np.unique(labels)) == set(TISSUE_LABELS)
    # Grey and white matter are each a sizeable part of the brain (not an empty threshold).
    counts = {TISSUE_LABELS[v]: n for v, n in zip(*np.unique(labels, return_counts=True))}
    assert counts["grey_matter"] > 100_000 and counts["white_matter"] > 100_000


def test_brain_threshold_is_validated():
    with pytest.raises(ValueError, match="tissue_threshold must be in \\(0, 1\\), got 1.5"):
        build_brain_sample({"tissue_threshold": 1.5})


def test_dicom_samples_carry_identifiers_and_one_is_truncated():
    files = collect_dicom_samples()
    ct = pydicom.dcmread(io.BytesIO(files["CT_small.dcm"]))
    assert str(ct.PatientName) == "CompressedSamples^CT1"
    with pytest.raises(ValueError, match="less than expected"):
        _ = pydicom.dcmread(io.BytesIO(files["MR_truncated.dcm"])).pixel_array


def test_sample_folder_is_deterministic_and_lists_its_checksums(brain):
    t1, tissue = brain
    fundus = {"fundus/retina_r00_a0.png": np.zeros((8, 8, 3), dtype=np.uint8),
              "fundus/retina_r00_a0_mask.png": np.zeros((8, 8), dtype=np.uint8)}
    rows = pd.DataFrame([("fundus/retina_r00_a0.png", "fundus", "OP", "retina")],
                        columns=["path", "label", "modality", "patient"])
    args = (t1, tissue, fundus, rows, {"CT_small.dcm": b"dcm"}, "# readme")
    first, second = assemble_sample_folder(*args), assemble_sample_folder(*args)
    assert first == second
    manifest = json.loads(first[PUBLIC_SAMPLE_MANIFEST])["sha256"]
    assert set(manifest) == set(first) - {PUBLIC_SAMPLE_MANIFEST}
    assert all(hashlib.sha256(first[name]).hexdigest() == digest for name, digest in manifest.items())
    labels = first["labels.csv"].decode()
    assert labels.splitlines()[0] == "path,label,modality,patient"
    assert "fundus/retina_r00_a0.png,fundus,OP,retina" in labels.splitlines()
    reloaded = nib.Nifti1Image.from_bytes(__import__("gzip").decompress(first["brain/mni152_t1_mask.nii.gz"]))
    assert np.array_equal(np.asarray(reloaded.dataobj), np.asarray(tissue.dataobj))
