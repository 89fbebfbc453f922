"""Shared fixtures: a tiny source folder with good and bad files, and an in-process runner
that uses the project's real catalog with every path moved under a temporary folder."""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from synthmed.hooks import add_source_alias
from tests.dicom_factory import dicom_bytes, make_sentinel_dicom

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Tiny tensors on a 2-core machine: several torch threads fighting over the cores made
# millisecond operations take seconds. One thread keeps the suite fast and stable.
import torch  # noqa: E402

torch.set_num_threads(1)
TEST_KEY = b"synthmed-test-key-0123456789abcdef"


def ct_instance(position_mm: float, *, series_uid: str, study_uid: str, patient_id: str = "SERIES-PAT",
                rows: int = 12, cols: int = 10, modality: str = "CT", value: int = 0) -> pydicom.Dataset:
    """A minimal single-frame axial CT instance at z = ``position_mm``."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    sop_uid = generate_uid(entropy_srcs=[series_uid, str(position_mm)])
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.PatientID, ds.PatientName, ds.Modality = patient_id, "SERIES^PATIENT", modality
    ds.StudyDate = "20200102"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelSpacing = [0.5, 0.5]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0.0, 0.0, float(position_mm)]
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    pixels = np.full((rows, cols), 1024 + value, dtype=np.int16)
    pixels[2:-2, 2:-2] += 400
    ds.PixelData = pixels.tobytes()
    return ds


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_source_folder(root: Path, sentinel: str = "SNTLXQZ") -> dict[str, str]:
    """A source folder of every kind of input, with the reason each bad file must get.

    Returns:
        ``{relative path: expected rejection reason}`` for the files that must be rejected.
    """
    rng = np.random.default_rng(0)
    files: dict[str, bytes] = {}
    files["dicom/sentinel.dcm"] = dicom_bytes(make_sentinel_dicom(sentinel, rows=16, cols=16))
    study, series = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
    for k, z in enumerate([0.0, 2.5, 5.0, 7.5]):
        files[f"dicom/series/slice{k}.dcm"] = dicom_bytes(ct_instance(z, series_uid=series, study_uid=study,
                                                                      value=10 * k))
    files["dicom/us.dcm"] = dicom_bytes(ct_instance(0.0, series_uid="1.2.826.0.1.3680043.8.498.3", study_uid=study,
                                                    patient_id="US-PAT", modality="US"))
    truncated = dicom_bytes(ct_instance(0.0, series_uid="1.2.826.0.1.3680043.8.498.4", study_uid=study, patient_id="T"))
    files["dicom/truncated.dcm"] = truncated[:-40]
    files["dicom/empty.dcm"] = b""

    volume = np.zeros((20, 24, 18), dtype=np.float32)
    volume[4:16, 5:19, 3:15] = rng.uniform(50, 100, size=(12, 14, 12))
    mask = (volume > 0).astype(np.uint8)
    mask[4:10] *= 2
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    files["nifti/head.nii.gz"] = _nifti(volume, affine)
    files["nifti/head_mask.nii.gz"] = _nifti(mask, affine)
    bad = volume.copy()
    bad[0, 0, 0] = np.nan
    files["nifti/nan.nii.gz"] = _nifti(bad, affine)

    photo = np.zeros((48, 40, 3), dtype=np.uint8)
    photo[4:44, 4:36] = (180, 60, 40)
    photo[20:24, 4:36] = (90, 20, 20)  # a dark "vessel" band
    vessel = np.zeros((48, 40), dtype=np.uint8)
    vessel[20:24, 4:36] = 255
    files["photos/eye.png"] = png_bytes(photo)
    files["photos/eye_mask.png"] = png_bytes(vessel)
    files["photos/grey16.png"] = png_bytes((rng.uniform(0, 60000, size=(20, 30))).astype(np.uint16))
    files["photos/broken.png"] = b"\x89PNG\r\n\x1a\nnot really a png"
    files["photos/orphan_mask.png"] = png_bytes(vessel)
    files["notes.docx"] = b"PK\x03\x04 a word document"
    files["labels.csv"] = (b"path,label,modality,patient\nphotos/eye.png,fundus,OP,eye-patient\n"
                           b"nifti/head.nii.gz,brain,MR,\n")
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return {
        "dicom/truncated.dcm": "truncated",
        "dicom/empty.dcm": "empty",
        "nifti/nan.nii.gz": "non_finite",
        "photos/broken.png": "unreadable",
        "photos/orphan_mask.png": "mask_without_image",
        "notes.docx": "unsupported_format",
    }


def _nifti(array: np.ndarray, affine: np.ndarray) -> bytes:
    import gzip

    return gzip.compress(nib.Nifti1Image(array, affine).to_bytes(), mtime=0)


def load_parameters(env: str = "test") -> dict[str, Any]:
    loader = OmegaConfigLoader(
        conf_source=str(PROJECT_ROOT / "conf"), base_env="base", default_run_env=env,
        merge_strategy={"parameters": "soft"},
    )
    return loader["parameters"]


# The toy source folder (`write_source_folder`: one small head, a few DICOM files and photographs)
# has no patients to split by and no lesion label, like conf/template's one-template sample: tests
# that run the pipelines on it use conf/test with these overrides (conf/template's choices at the
# test sizes), while conf/test alone is the small sample cohort of the shared `dvc repro`.
# Manifest columns that hold hex digests: read as text, as the catalog does (a digest such as
# "12e456" parses as a float, inf, without it).
MANIFEST_DTYPES = {"item_id": str, "patient_key": str}


TOY_PARAMETERS: dict[str, Any] = {
    "preprocessing": {"geometry": {"MR": {"target_spacing_mm": 3.0}},
                      "split": {"strategy": "auto", "stratify": "none", "lesion_labels": [1]}},
    "extraction": {"slices": {"planes": ["axial", "coronal", "sagittal"],
                              "keep_every": {"axial": 2, "coronal": 2, "sagittal": 4},
                              "classes": "plane", "series": None, "finding": {"lesion_labels": [1]}},
                   "volumes": {"enabled": False, "series": None},
                   "lesion_patches": {"enabled": False}},   # no lesion label: the DCGAN learns slices
    "evaluation": {"memorisation": {"plant": {"min_source_std": 0.01}}},
    "rebalancing": {"strategy": "match_majority", "ratio": 1.0},
    "ddpm": {"model": {"num_classes": 3},
             "sampling": {"plan": [{"condition": "class", "label": "sagittal", "count": 3}]}},
    "dcgan": {"run": {"source": "slices"}, "model": {"num_classes": 3},
              "sampling": {"plan": [{"condition": "class", "label": plane, "count": 32}
                                    for plane in ("axial", "coronal", "sagittal")]}},
    "pix2pix": {"run": {"source": "patches"}, "model": {"channels": 3, "label_classes": 0, "mask_channels": 1,
                                                                 "lesion_l1_weight": 0.0}},
}


def toy_parameters() -> dict[str, Any]:
    """conf/test's parameters with ``TOY_PARAMETERS`` merged in (lists replace lists)."""
    params = load_parameters()
    for block, values in TOY_PARAMETERS.items():
        params[block] = _merge(params.get(block, {}), values)
    return params


def use_toy_parameters(project: Path) -> None:
    """Write ``TOY_PARAMETERS`` into the conf/test of a project copy, for `kedro run` (KEDRO_ENV=test) on
    the toy source folder. Each block goes into the conf/test file that holds it (Kedro refuses a
    top-level key in two files of one environment), or into a file of its own."""
    folder = project / "conf/test"
    files = {path: yaml.safe_load(path.read_text()) or {} for path in sorted(folder.glob("parameters*.yml"))}
    for block, values in TOY_PARAMETERS.items():
        path = next((p for p, content in files.items() if block in content), folder / f"parameters_toy_{block}.yml")
        content = files.setdefault(path, {})
        content[block] = _merge(content.get(block, {}), values)
    for path, content in files.items():
        path.write_text(yaml.safe_dump(content, sort_keys=False))


def _add_params(catalog: DataCatalog, prefix: str, value: Any) -> None:
    catalog[f"params:{prefix}"] = MemoryDataset(value, copy_mode="deepcopy")
    if isinstance(value, dict):
        for key, sub in value.items():
            _add_params(catalog, f"{prefix}.{key}", sub)


def project_catalog(workdir: Path, raw_sources: Path, key: bytes | None = TEST_KEY,
                    overrides: dict[str, Any] | None = None) -> DataCatalog:
    """The project's catalog (conf/base/catalog.yml) with every path under ``workdir``, and the
    parameters for a toy source folder (``toy_parameters``).

    Args:
        overrides: parameter overrides merged into the top-level blocks, e.g.
            ``{"ingestion": {"strict": True}}``.
    """
    loader = OmegaConfigLoader(conf_source=str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="test")
    config = loader["catalog"]
    for entry in config.values():
        for field in ("path", "filepath"):
            if field in entry and not Path(entry[field]).is_absolute():
                entry[field] = (str(workdir / entry[field]) if not entry[field].startswith("src/")
                                else str(PROJECT_ROOT / entry[field]))
    config["raw_sources"]["path"] = str(raw_sources)
    catalog = DataCatalog.from_config(config)
    add_source_alias(catalog)  # what synthmed.hooks does for a Kedro session
    params = toy_parameters()
    for block, values in (overrides or {}).items():
        params[block] = _merge(params.get(block, {}), values)
    for name, value in params.items():
        _add_params(catalog, name, value)
    if key is not None:
        catalog["pseudonymisation_key"] = MemoryDataset(key, copy_mode="assign")
    return catalog


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in override.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def run(pipeline, catalog: DataCatalog) -> None:
    """Run ``pipeline`` sequentially on ``catalog`` (outputs land in the catalog's files)."""
    SequentialRunner().run(pipeline, catalog)


@pytest.fixture()
def source_folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "source"
    expected = write_source_folder(root)
    return root, expected


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DataCatalog]:
    """Ingestion + preprocessing + extraction once on the tiny source folder, for reading."""
    from synthmed.pipelines import extraction, ingestion, preprocessing

    workdir = tmp_path_factory.mktemp("processed")
    write_source_folder(workdir / "source")
    # The folder is mostly bad files on purpose (6 of 17 are rejected).
    catalog = project_catalog(workdir, workdir / "source", overrides={"ingestion": {"max_rejection_rate": 0.5}})
    run(ingestion.create_pipeline() + preprocessing.create_pipeline() + extraction.create_pipeline(), catalog)
    return workdir, catalog


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.fixture(autouse=True)
def _fresh_checksum_cache():
    """Every test starts with an empty verified-file cache (``synthmed.core.checksums``)."""
    from synthmed.core import checksums

    checksums.clear_verified_cache()
    yield
    checksums.clear_verified_cache()


@pytest.fixture
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file ``synthmed.core.checksums`` hashes, in order."""
    from synthmed.core import checksums

    calls: list[Path] = []
    real = checksums.sha256_file

    def counting(path):
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(checksums, "sha256_file", counting)
    return calls


@pytest.fixture
def small_disk(tmp_path: Path):
    """``mount(size)`` -> a tmpfs of ``size`` (e.g. "256k") for real full-disk tests.

    Needs root and mount rights; the test is skipped where the machine refuses.
    """
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], capture_output=True)


# ---- Kedro and DVC as subprocesses in a copy of the project (end-to-end and slow tests)

BIN = Path(sys.executable).parent


def _env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "KEDRO_ENV": "test",
        "KEDRO_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
        **extra,
    }


def sh(*args: str, cwd: Path, check: bool = True, timeout: int = 900,
       local_env: bool = False) -> subprocess.CompletedProcess:
    """Run a command; ``local_env`` runs Kedro in its default env (conf/local) instead of ``test``."""
    env = _env()
    if local_env:
        env.pop("KEDRO_ENV")
    result = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


# `make test` runs the suite on several processes (pytest-xdist, `-n 2 --dist loadscope`). Each test
# module goes to one process whole, so a module-scoped fixture is built once; the modules whose
# tests read the session's shared `dvc repro` (`reproduced_project`, minutes on 2 cores) are one
# unit on one process. (xdist's `xdist_group` mark cannot do this with pytest 9: xdist 3.8 renames
# `item._nodeid`, which pytest 9 no longer reads, so the groups are silently ignored.)
SHARED_RUN_FIXTURE = "reproduced_project"
SHARED_RUN_MODULES = ("tests/test_end_to_end.py", "tests/test_notebooks.py", "tests/test_screenshots.py")


def xdist_unit(nodeid: str) -> str:
    """The unit of work one xdist process runs whole: the test's module, or the shared run's modules."""
    module = nodeid.split("::", 1)[0]
    return SHARED_RUN_FIXTURE if module in SHARED_RUN_MODULES else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadscope":
        return None  # xdist's own scheduler for any other --dist
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_unit(nodeid)

    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    strays = sorted({item.nodeid.split("::", 1)[0] for item in items
                     if SHARED_RUN_FIXTURE in getattr(item, "fixturenames", ())} - set(SHARED_RUN_MODULES))
    if strays:
        raise pytest.UsageError(f"{strays} use the `{SHARED_RUN_FIXTURE}` fixture but are not in SHARED_RUN_MODULES "
                                "(tests/conftest.py): add them, or every xdist process runs its own `dvc repro`.")


@functools.cache
def public_collections_tool() -> ModuleType:
    """``tools/public_collections.py`` as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("public_collections", PROJECT_ROOT / "tools/public_collections.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return SHARED_RUN_FIXTURE if module in SHARED_RUN_MODULES else module


@pytest.fixture(scope="session")
def reproduced_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project after `dvc repro` with the `test` configuration, its outputs committed
    (commit "outputs" on top of "copy").

    The slow tests that need a finished run (the push / pull round trip, the notebooks, the kedro-viz
    screenshot) share this one run instead of each running every pipeline again (minutes each on 2
    cores). They only read it or add to it (a DVC remote, a push); a test that would change its
    outputs works on a `shutil.copytree` of it.
    """
    project = project_copy(tmp_path_factory.mktemp("reproduced") / "project")
    sh("dvc", "repro", cwd=project)
    sh("git", "add", "-A", cwd=project)
    sh("git", "commit", "-q", "-m", "outputs", cwd=project)
    return project


def project_copy(target: Path) -> Path:
    """The working tree's tracked and untracked (not ignored) files, as a fresh git repo."""
    public_collections_tool().project_copy(target)  # the same copy as tools/public_collections.py makes
    sh("git", "init", "-q", "-b", "main", cwd=target)
    sh("git", "add", "-A", cwd=target)
    sh("git", "commit", "-q", "-m", "copy", cwd=target)
    return target
