"""Exporting generated images: PNG pixels (16-bit or 8-bit grey), DICOM and NIfTI files marked synthetic,
and sampling a saved model folder without Kedro (``synthmed generate``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.core.lazy import lazy_import
from synthmed.generators.base import SamplerSpec, TrainedGenerator

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")


def to_png_pixels(image: np.ndarray, bits: int = 16) -> np.ndarray:
    """``(C, H, W)`` float in [-1, 1] -> PNG pixels, [-1, 1] mapped linearly onto the full range.

    Grey images become 16-bit ``(H, W)`` uint16 (0..65535), so that the export does not
    quantise what the model produced; RGB images become 8-bit ``(H, W, 3)`` uint8, because
    PNG writers here (Pillow) have no 16-bit RGB mode. ``bits=8`` gives 8-bit grey too: what
    loaders that convert to RGB (torchvision's default) read without clipping.
    """
    if bits not in (8, 16):
        raise ValueError(f"PNG pixels are 8 or 16 bits, got bits={bits}.")
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"Expected an image with shape (C, H, W), C in (1, 3), got {image.shape}.")
    unit = np.clip((np.asarray(image, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)
    if image.shape[0] == 1 and bits == 8:
        return np.rint(unit[0] * 255).astype(np.uint8)
    if image.shape[0] == 1:
        return np.rint(unit[0] * 65535).astype(np.uint16)
    return np.rint(np.moveaxis(unit, 0, -1) * 255).astype(np.uint8)


def generate_to_folder(model: Path, out: Path, n: int, *, label: str | None = None, sampler: SamplerSpec | None = None,
                       seed: int = 0, batch_size: int = 16) -> pd.DataFrame:
    """Sample ``n`` images from a saved generator folder into ``out``, without Kedro or the project.

    ``out`` receives ``<label>/<index>.png`` (`to_png_pixels`), ``images.npy`` (the float32
    images in [-1, 1], lossless; no pickle), ``provenance.csv`` and a ``README.md`` that says
    the images were not checked by the memorisation gate.

    Args:
        model: a folder written by the training pipeline (verified against its checksums).
        out: a new or empty folder.
        n: images to draw.
        label: the class to draw (class-conditional models); None draws the classes in turn.
        sampler: the sampler (diffusion models); default DDIM, 50 steps, no guidance.
        seed, batch_size: batch ``b`` draws from ``seed + b``, as in the sampling pipeline.

    Raises:
        ValueError: ``n`` < 1, an unknown label, a model that needs masks or images to
            condition on, or a non-empty ``out``.
        CheckpointError: the model folder is missing, incomplete or corrupt.
    """
    from PIL import Image

    from synthmed.generators.registry import get_family, load_trained_generator
    from synthmed.generators.sampling import checkpoint_id, generate_from_plan

    model, out = Path(model), Path(out)
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder; name a new folder (nothing is overwritten).")
    trained = load_trained_generator(model)
    spec, config, models = get_family(trained.family), trained.config, trained.models
    class_names = list(trained.class_names)
    needed = config.needed_conditions()
    if needed - {"labels"}:
        raise ValueError(
            f"{model} is a {spec.name} model conditioned on {sorted(needed - {'labels'})}: it needs real masks or "
            "images to condition on, which a model folder does not carry; sample it with "
            "`kedro run --pipelines sampling` instead.")
    if "labels" in needed:
        if not class_names:
            raise ValueError(f"{model}/generator.json has no class names (a folder saved before they were "
                             "recorded); retrain it or sample with `kedro run --pipelines sampling`.")
        if label is not None and label not in class_names:
            raise ValueError(f"--label {label!r} is not a class of {model}; its classes are {class_names}.")
        chosen = [label] if label is not None else class_names
        counts = [n // len(chosen) + (1 if i < n % len(chosen) else 0) for i in range(len(chosen))]
        plan = pd.DataFrame([{"condition": "class", "label": name, "count": count, "case": ""}
                             for name, count in zip(chosen, counts) if count])
    else:
        if label is not None:
            raise ValueError(f"{model} is an unconditional {spec.name} model: it takes no --label.")
        plan = pd.DataFrame([{"condition": "unconditional", "label": "", "count": n, "case": ""}])
    result = generate_from_plan(spec, config, models, plan, class_names, sampler or SamplerSpec(), seed=seed,
                                batch_size=batch_size, checkpoint=checkpoint_id(TrainedGenerator(spec.name, config,
                                                                                                 models)))
    out.mkdir(parents=True, exist_ok=True)
    for row in result.provenance.itertuples():
        path = out / (row.label or "samples") / f"{row.index:06d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(to_png_pixels(result.images[row.index])).save(path)
    np.save(out / "images.npy", result.images, allow_pickle=False)
    provenance = result.provenance.assign(model=str(model))
    provenance.to_csv(out / "provenance.csv", index=False)
    (out / "README.md").write_text(
        f"# {len(provenance)} images from the {spec.name} model in {model}\n\n"
        "Drawn with `synthmed generate`. **Not checked by the memorisation gate**: a generative model can "
        "reproduce its training images, i.e. patients. Share them only with people who may see the training "
        "data, or publish through the project's rebalancing stage, which gates every image.\n\n"
        "`provenance.csv`: one row per image (sampler, steps, guidance, seed, class). `images.npy`: the images "
        "as float32 in [-1, 1], shape (N, C, H, W), in provenance order.\n", encoding="utf-8")
    return provenance


# DICOM Secondary Capture: Conversion Type "SYN" is the standard's own term for a synthetic image.
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SYNTHETIC_MARK = "SYNTHETIC"


@dataclass(frozen=True)
class SyntheticOrigin:
    """Where a synthetic image comes from; the only facts its DICOM and NIfTI files carry."""

    generator: str
    checkpoint: str
    label: str
    seed: int
    index: int
    software_version: str


def to_dicom(image: np.ndarray, origin: SyntheticOrigin) -> Any:
    """``(C, H, W)`` float in [-1, 1] -> a DICOM Secondary Capture dataset marked synthetic.

    No identifier of any person: patient name and id say ``SYNTHETIC``, no dates; Image Type
    ``DERIVED\\SECONDARY\\SYNTHETIC``, Conversion Type ``SYN``, Burned In Annotation ``NO``. The
    UIDs are new and derived from the checkpoint, seed and index only (the same image gives the
    same file). Grey images are 16-bit with a rescale back to [-1, 1]; RGB images 8-bit.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def uid(kind: str) -> str:
        return generate_uid(entropy_srcs=["synthmed", kind, origin.checkpoint, str(origin.seed), str(origin.index)])

    pixels = to_png_pixels(image)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid(f"instance-{origin.generator}")
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid(f"series-{origin.label}")
    ds.PatientName, ds.PatientID = f"{SYNTHETIC_MARK}^IMAGE", SYNTHETIC_MARK
    ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "", "", "", ""
    ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", ""
    ds.Modality, ds.ConversionType = "OT", "SYN"
    ds.ImageType = ["DERIVED", "SECONDARY", SYNTHETIC_MARK]
    ds.BurnedInAnnotation, ds.RecognizableVisualFeatures = "NO", "NO"
    ds.Manufacturer, ds.SoftwareVersions = "synthmed", origin.software_version
    ds.SeriesNumber, ds.InstanceNumber = 1, origin.index + 1
    ds.SeriesDescription = f"{SYNTHETIC_MARK} {origin.label}"[:64]
    ds.DerivationDescription = (f"Synthetic image generated by synthmed ({origin.generator}, checkpoint "
                                f"{origin.checkpoint}, seed {origin.seed}); not an image of a patient.")[:1024]
    ds.ImageComments = f"{SYNTHETIC_MARK}: generated, not acquired. Class: {origin.label}."
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    if pixels.ndim == 2:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        # Stored 0..65535 -> the generator's [-1, 1].
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1", f"{2 / 65535:.10g}", "US"
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def to_nifti(image: np.ndarray, origin: SyntheticOrigin) -> Any:
    """``(C, H, W)`` float in [-1, 1] -> a float32 NIfTI-1 image ``(W, H, 1[, C])`` marked synthetic.

    Axes: x runs along the image columns, y from the bottom row up (so viewers show it upright);
    1 mm voxels (a generated image has no physical spacing). ``descrip`` says it is synthetic.
    """
    import nibabel as nib

    data = np.asarray(image, dtype=np.float32)
    volume = np.moveaxis(data, 0, -1)[::-1].transpose(1, 0, 2)[:, :, None, :]  # (W, H, 1, C)
    if volume.shape[-1] == 1:
        volume = volume[..., 0]
    nifti = nib.Nifti1Image(np.ascontiguousarray(volume), np.eye(4))
    nifti.header["descrip"] = f"{SYNTHETIC_MARK} synthmed {origin.generator} {origin.checkpoint}"[:79].encode()
    nifti.header.set_xyzt_units("mm")
    return nifti
