"""Tests for synthmed.datasets.file_folder: lazy listing on load, encoding by suffix on save."""

from __future__ import annotations

import gzip
import io
import json
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from kedro.io import DatasetError
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from synthmed.datasets.file_folder import FileFolderDataset, check_relative_path, encode

# PNG chunks that can carry text, timestamps or EXIF (PNG 1.2 spec sections 11.3.4, 11.3.6;
# eXIf from the PNG extensions 1.5.0). A published PNG must carry none of them.
METADATA_CHUNKS = {b"tEXt", b"iTXt", b"zTXt", b"tIME", b"eXIf"}


def _png_chunk_types(data: bytes) -> list[bytes]:
    """Chunk types of a PNG file, parsed from the bytes (length, type, data, CRC)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    types, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        types.append(data[offset + 4 : offset + 8])
        offset += 12 + length
    return types


def _make_tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "b.png").write_bytes(b"12345")
    (root / "a.dcm").write_bytes(b"1")
    (root / "sub" / "c.nii.gz").write_bytes(b"123")
    (root / "sub" / ".DS_Store").write_bytes(b"hidden")
    (root / ".hidden.txt").write_bytes(b"hidden")
    (root / ".git" / "config").write_bytes(b"hidden")
    (root / "notes.xlsx").write_bytes(b"excluded")
    (root / "sub" / "more.xlsx").write_bytes(b"excluded")


def test_load_lists_sorted_files_with_sizes_skipping_hidden_and_excluded(tmp_path: Path) -> None:
    _make_tree(tmp_path / "src")
    folder = FileFolderDataset(path=str(tmp_path / "src"), exclude=["*.xlsx"]).load()
    assert folder.files == ("a.dcm", "b.png", "sub/c.nii.gz")
    assert dict(folder.sizes) == {"a.dcm": 1, "b.png": 5, "sub/c.nii.gz": 3}
    assert folder.read_bytes("sub/c.nii.gz") == b"123"


def test_read_head_reads_only_the_first_bytes_of_a_listed_file(tmp_path: Path) -> None:
    _make_tree(tmp_path / "src")
    folder = FileFolderDataset(path=str(tmp_path / "src")).load()
    assert folder.read_head("b.png", 3) == b"123"
    assert folder.read_head("b.png", 100) == b"12345"
    with pytest.raises(KeyError, match="'.hidden.txt'"):
        folder.read_head(".hidden.txt", 3)


def test_missing_folder_on_load_is_a_clear_dataset_error(tmp_path: Path) -> None:
    dataset = FileFolderDataset(path=str(tmp_path / "nowhere"))
    assert not dataset.exists()
    with pytest.raises(DatasetError, match="nowhere does not exist or is not a folder"):
        dataset.load()


def _nifti() -> nib.Nifti1Image:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    return nib.Nifti1Image(data, np.diag([0.5, 0.5, 2.0, 1.0]))


def _dicom() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["synthmed file_folder test"])
    ds.Modality = "CT"
    ds.Rows, ds.Columns = 2, 3
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.arange(6, dtype=np.int16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_save_encodes_each_supported_object_by_suffix(tmp_path: Path) -> None:
    root = tmp_path / "out"
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    table = pd.DataFrame({"item": ["a", "b"], "value": [1, 2]})
    FileFolderDataset(path=str(root)).save({
        "raw.bin": b"\x00\x01",
        "README.md": "# title\n",
        "table.csv": table,
        "meta.json": {"b": 1, "a": [1, 2]},
        "vol/image.nii.gz": _nifti(),
        "vol/image.nii": _nifti(),
        "ct/0001.dcm": _dicom(),
        "png/grey.png": grey,
    })
    assert (root / "raw.bin").read_bytes() == b"\x00\x01"
    assert (root / "README.md").read_text() == "# title\n"
    assert (root / "table.csv").read_text() == "item,value\na,1\nb,2\n"
    text = (root / "meta.json").read_text()
    assert json.loads(text) == {"a": [1, 2], "b": 1}
    assert text.index('"a"') < text.index('"b"')  # sorted keys
    for name in ("vol/image.nii.gz", "vol/image.nii"):
        loaded = nib.load(root / name)
        np.testing.assert_array_equal(np.asarray(loaded.dataobj), _nifti().get_fdata())
        np.testing.assert_allclose(loaded.affine, _nifti().affine)
    raw_dicom = (root / "ct" / "0001.dcm").read_bytes()
    assert raw_dicom[128:132] == b"DICM"  # PS3.10 file format: preamble + magic + file meta
    ds = pydicom.dcmread(root / "ct" / "0001.dcm")
    assert ds.SOPInstanceUID == _dicom().SOPInstanceUID
    np.testing.assert_array_equal(ds.pixel_array, np.arange(6, dtype=np.int16).reshape(2, 3))
    np.testing.assert_array_equal(np.asarray(Image.open(root / "png" / "grey.png")), grey)


def test_nifti_gz_is_byte_identical_across_saves(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    FileFolderDataset(path=str(first)).save({"image.nii.gz": _nifti()})
    FileFolderDataset(path=str(second)).save({"image.nii.gz": _nifti()})
    data = (first / "image.nii.gz").read_bytes()
    assert data == (second / "image.nii.gz").read_bytes()
    # RFC 1952: bytes 4-7 are MTIME (0 = none); FLG (byte 3) without FNAME (0x08).
    assert data[4:8] == b"\x00\x00\x00\x00"
    assert data[3] & 0x08 == 0
    assert gzip.decompress(data) == _nifti().to_bytes()


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.uint8).reshape(3, 4),
        np.arange(36, dtype=np.uint8).reshape(3, 4, 3),
        np.arange(48, dtype=np.uint8).reshape(3, 4, 4),
        (np.arange(12, dtype=np.uint16) * 5000).reshape(3, 4),
    ],
    ids=["grey8", "rgb", "rgba", "grey16"],
)
def test_png_round_trips_pixels_without_metadata_chunks(array: np.ndarray) -> None:
    data = encode("image.png", array)
    chunks = _png_chunk_types(data)
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND"
    assert not METADATA_CHUNKS & set(chunks), chunks
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), array)


@pytest.mark.parametrize(
    "array", [np.zeros((3, 4), dtype=np.float32), np.zeros((3, 4, 2), dtype=np.uint8),
              np.zeros((2, 3, 4), dtype=np.uint16)]
)
def test_png_rejects_unsupported_arrays_naming_dtype_and_shape(array: np.ndarray) -> None:
    with pytest.raises(DatasetError, match=rf"got {array.dtype} \({', '.join(map(str, array.shape))}\)"):
        encode("image.png", array)


def test_callables_are_evaluated_at_save_time(tmp_path: Path) -> None:
    calls: list[str] = []

    def make() -> str:
        calls.append("made")
        return "lazy text"

    FileFolderDataset(path=str(tmp_path / "out")).save({"lazy.txt": make})
    assert calls == ["made"]
    assert (tmp_path / "out" / "lazy.txt").read_text() == "lazy text"


def test_save_replaces_the_whole_folder(tmp_path: Path) -> None:
    dataset = FileFolderDataset(path=str(tmp_path / "out"))
    dataset.save({"old.txt": "old", "keep.txt": "v1"})
    dataset.save({"keep.txt": "v2"})
    assert dataset.load().files == ("keep.txt",)
    assert (tmp_path / "out" / "keep.txt").read_text() == "v2"


@pytest.mark.parametrize("relpath", ["../x", "/abs", ".hidden", "a/../b", "a/.b", "", "a b.txt"])
def test_check_relative_path_rejects_escapes_and_hidden_names(relpath: str) -> None:
    with pytest.raises(DatasetError, match=f"Output file name {relpath!r} is not allowed"):
        check_relative_path(relpath)


def test_check_relative_path_accepts_nested_plain_names() -> None:
    assert check_relative_path("patient_01/series-2/0001.dcm").parts == (
        "patient_01", "series-2", "0001.dcm"
    )


def test_bad_output_name_leaves_the_previous_folder_intact(tmp_path: Path) -> None:
    dataset = FileFolderDataset(path=str(tmp_path / "out"))
    dataset.save({"a.txt": "kept"})
    with pytest.raises(DatasetError, match="'../escape.txt' is not allowed"):
        dataset.save({"a.txt": "new", "../escape.txt": "x"})
    assert (tmp_path / "out" / "a.txt").read_text() == "kept"
    assert not (tmp_path / "escape.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


@pytest.mark.parametrize(
    ("relpath", "obj"),
    [("value.bin", 3.5), ("table.csv", {"a": 1}), ("image.png", [[0, 1]]), ("scan.dcm", _nifti())],
)
def test_unsupported_object_is_a_dataset_error_naming_the_file(
    tmp_path: Path, relpath: str, obj: object
) -> None:
    with pytest.raises(DatasetError, match=f"Cannot write '{relpath}': no encoder for a {type(obj).__name__}"):
        FileFolderDataset(path=str(tmp_path / "out")).save({relpath: obj})
    assert not (tmp_path / "out").exists()


def test_the_public_sample_replaces_only_an_empty_folder_or_the_sample(tmp_path):
    from synthmed.datasets.file_folder import PUBLIC_SAMPLE_MANIFEST

    sample = {PUBLIC_SAMPLE_MANIFEST: {"sha256": {}}, "a.txt": "sample"}
    dataset = FileFolderDataset(path=str(tmp_path / "raw"))
    dataset.save(sample)  # absent: written
    dataset.save({**sample, "a.txt": "again"})  # the sample itself: replaced
    assert (tmp_path / "raw/a.txt").read_text() == "again"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "scan.dcm").write_bytes(b"patient data")
    with pytest.raises(DatasetError, match="Refusing to write the public sample"):
        FileFolderDataset(path=str(mine)).save(sample)
    assert sorted(p.name for p in mine.iterdir()) == ["scan.dcm"]
    FileFolderDataset(path=str(mine)).save({"other.txt": "not the sample"})  # other outputs are unaffected


# --------------------------------------------------------------------- symbolic links


def _linked_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A source folder with every kind of link; ``outside`` holds a file it must never read."""
    root, outside = tmp_path / "source", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "real.png").write_bytes(b"real")
    (root / "sub" / "inner.png").write_bytes(b"inner")
    (outside / "secret.png").write_bytes(b"SENTINEL-OUTSIDE")
    (root / "link_in.png").symlink_to(root / "real.png")
    (root / "link_out.png").symlink_to(outside / "secret.png")
    (root / "passwd").symlink_to("/etc/passwd")
    (root / "dir_in").symlink_to(root / "sub", target_is_directory=True)
    (root / "dir_out").symlink_to(outside, target_is_directory=True)
    (root / "sub" / "loop").symlink_to("..", target_is_directory=True)
    (root / "broken.png").symlink_to(root / "missing.png")
    return root, outside


@pytest.fixture
def no_read_outside(monkeypatch):
    """Fail on any open of a file outside the allowed folders (listing must not read them)."""
    import builtins

    allowed: list[Path] = []
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and Path(file).exists() and "b" in (args[0] if args else kwargs.get(
                "mode", "r")):
            resolved = Path(file).resolve()
            if not any(resolved.is_relative_to(a) for a in allowed):
                raise AssertionError(f"read outside the source folder: {file} -> {resolved}")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    return allowed


def test_links_that_leave_the_source_folder_are_refused_with_a_reason(tmp_path, no_read_outside):
    root, _ = _linked_tree(tmp_path)
    no_read_outside.append(root.resolve())
    folder = FileFolderDataset(path=str(root)).load()

    # dir_in/loop is a link back to the root: refused, not walked forever.
    assert list(folder.files) == ["real.png", "sub/inner.png"]
    assert {rel: reason for rel, (reason, _) in folder.refused.items()} == {
        "broken.png": "broken_link",
        "dir_out": "link_outside_source",
        "link_out.png": "link_outside_source",
        "passwd": "link_outside_source",
        "dir_in/loop": "link_loop",
        "sub/loop": "link_loop",
    }
    assert all(detail for _, detail in folder.refused.values())
    # Files reached again through links inside the folder are listed once, under their own path.
    assert folder.duplicates == {"dir_in/inner.png": "sub/inner.png", "link_in.png": "real.png"}
    assert [folder.read_bytes(rel) for rel in folder.files] == [b"real", b"inner"]
    for rel in [*folder.refused, *folder.duplicates]:
        with pytest.raises(KeyError):
            folder.read_bytes(rel)


def test_a_file_replaced_by_an_outside_link_after_listing_is_not_read(tmp_path):
    root, outside = _linked_tree(tmp_path)
    folder = FileFolderDataset(path=str(root)).load()
    (root / "real.png").unlink()
    (root / "real.png").symlink_to(outside / "secret.png")
    with pytest.raises(DatasetError, match="resolves outside the source folder"):
        folder.read_bytes("real.png")
    with pytest.raises(DatasetError, match="resolves outside the source folder"):
        folder.read_head("real.png", 4)


def test_a_source_folder_reached_through_a_link_lists_its_files(tmp_path):
    root, _ = _linked_tree(tmp_path)
    (tmp_path / "alias").symlink_to(root, target_is_directory=True)
    folder = FileFolderDataset(path=str(tmp_path / "alias")).load()
    assert list(folder.files) == ["real.png", "sub/inner.png"]
    assert folder.read_bytes("real.png") == b"real"


def test_a_spilled_file_is_moved_into_place_not_rewritten(tmp_path: Path) -> None:
    from synthmed.core.checksums import sha256_bytes
    from synthmed.core.parallel import SpilledFile, SpillFolder
    from synthmed.datasets.integrity import FOLDER_LISTING

    spill = SpillFolder("synthmed-test-")
    written = spill.path / "copy.dcm"
    written.write_bytes(b"de-identified bytes")
    inode = written.stat().st_ino
    dataset = FileFolderDataset(path=str(tmp_path / "out"))
    dataset.save({"p/0000.dcm": SpilledFile(written, spill), "p/notes.txt": "text"})

    target = tmp_path / "out" / "p" / "0000.dcm"
    assert target.read_bytes() == b"de-identified bytes" and not written.exists()
    assert target.stat().st_ino == inode  # renamed on one filesystem: no second write of the bytes
    listing = json.loads((tmp_path / "out" / FOLDER_LISTING).read_text())["files"]
    assert listing["p/0000.dcm"]["sha256"] == sha256_bytes([b"de-identified bytes"])
    assert dataset.load().read_verified(["p/0000.dcm"], sha256_bytes([b"de-identified bytes"]))
