"""Tests for the pseudonymisation key dataset (synthmed.datasets.secrets) and key handling."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from kedro.io import DatasetError

from synthmed.datasets.file_folder import FileFolderDataset
from synthmed.datasets.secrets import (
    EXAMPLE_KEY,
    MIN_KEY_CHARS,
    PUBLIC_SAMPLE_MANIFEST,
    PseudonymisationKeyDataset,
    check_key_strength,
    is_public_sample,
)
from synthmed.privacy.pseudonyms import (
    PUBLIC_SAMPLE_KEY,
    PseudonymisationKeyError,
    key_from_credentials,
)

SECRET = "a-test-secret-that-is-long-enough"
STRONG = "3f9c2a7e51d08b64c7e2f1a95b30d84e6a1c7f2e90b54d3a8e6f1c2b7d09a4e5"  # a token_hex(32)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_FILES = {"fundus_01.png": b"\x89PNG fake pixels", "masks/fundus_01.png": b"mask bytes"}


def _sample_folder(root: Path) -> Path:
    """A tiny folder laid out like the bundled public sample, with its sha256 manifest."""
    for rel, data in SAMPLE_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    digests = {rel: hashlib.sha256(data).hexdigest() for rel, data in SAMPLE_FILES.items()}
    (root / PUBLIC_SAMPLE_MANIFEST).write_text(json.dumps({"sha256": digests}))
    return root


def _load_error(dataset: PseudonymisationKeyDataset) -> PseudonymisationKeyError:
    """The key error behind a failed load.

    Kedro's ``AbstractDataset.load`` wrapper re-raises any non-``DatasetError`` as a
    ``DatasetError`` whose message ends with the original one; the cause is kept.
    """
    with pytest.raises(DatasetError) as caught:
        dataset.load()
    cause = caught.value.__cause__
    assert isinstance(cause, PseudonymisationKeyError)
    assert str(cause) in str(caught.value)  # the instructions reach the user
    return cause


def _dataset(root: Path, credentials: dict | None = None) -> PseudonymisationKeyDataset:
    return PseudonymisationKeyDataset(credentials=credentials, source=FileFolderDataset(path=str(root)))


def test_configured_key_is_returned_as_bytes(tmp_path: Path) -> None:
    key = _dataset(_sample_folder(tmp_path), {"key": SECRET}).load()
    assert key == SECRET.encode("utf-8")
    assert key != PUBLIC_SAMPLE_KEY  # a configured key wins, even on the sample


def test_empty_key_is_an_error() -> None:
    with pytest.raises(PseudonymisationKeyError, match="non-empty string, got an empty string"):
        key_from_credentials({"key": ""})


def test_the_example_value_is_the_one_in_credentials_yml_example() -> None:
    example = (PROJECT_ROOT / "conf/local/credentials.yml.example").read_text()
    assert f'key: "{EXAMPLE_KEY}"' in example


WEAK_KEYS = {
    "example": (EXAMPLE_KEY, "example value"),
    "example_padded": (f"  {EXAMPLE_KEY} ", "example value"),
    "public_sample": (PUBLIC_SAMPLE_KEY.decode(), "public sample key"),
    "sixteen_spaces": (" " * 16, "only whitespace"),
    "short_hex": (STRONG[: MIN_KEY_CHARS - 1], f"31 characters long; at least {MIN_KEY_CHARS}"),
    "one_character": ("x" * 64, "1 distinct characters"),
    "few_characters": ("ab12" * 16, "4 distinct characters"),
    "repeated_block": ("0123456789abcdef" * 4, "one shorter block"),
}


@pytest.mark.parametrize("case", sorted(WEAK_KEYS))
def test_weak_keys_are_refused_for_own_data_with_how_to_make_one(tmp_path: Path, case: str) -> None:
    key, reason = WEAK_KEYS[case]
    (tmp_path / "scan.png").write_bytes(b"a team's own file")
    error = _load_error(_dataset(tmp_path, {"key": key}))
    message = str(error)
    assert reason in message
    assert "python3 -c 'import secrets; print(secrets.token_hex(32))'" in message
    assert "conf/local/credentials.yml" in message
    assert not key.strip() or key.strip() not in message  # the (bad) key itself is not echoed
    with pytest.raises(PseudonymisationKeyError, match="public sample"):
        check_key_strength(key, "test credentials")
    # also with no source folder at all
    _load_error(PseudonymisationKeyDataset(credentials={"key": key}))


@pytest.mark.parametrize("case", sorted(WEAK_KEYS))
def test_weak_keys_still_work_on_the_public_sample(tmp_path: Path, case: str) -> None:
    key = WEAK_KEYS[case][0]
    assert _dataset(_sample_folder(tmp_path), {"key": key}).load() == key.encode("utf-8")


def test_a_random_64_hex_key_passes(tmp_path: Path) -> None:
    check_key_strength(STRONG, "test credentials")
    (tmp_path / "scan.png").write_bytes(b"a team's own file")
    assert _dataset(tmp_path, {"key": STRONG}).load() == STRONG.encode()
    assert _dataset(tmp_path, {"key": SECRET}).load() == SECRET.encode()  # 33 characters, 14 distinct


def test_non_string_key_is_an_error_naming_its_type() -> None:
    with pytest.raises(PseudonymisationKeyError, match="non-empty string, got a int"):
        key_from_credentials({"key": 12345678901234567890})


def test_credentials_entry_without_key_is_an_error_naming_the_fields() -> None:
    error = _load_error(PseudonymisationKeyDataset(credentials={"secret": SECRET}))
    assert "with a 'key' field, got dict with fields ['secret']" in str(error)
    assert SECRET not in str(error)


def test_no_key_and_own_data_raises_with_instructions(tmp_path: Path) -> None:
    (tmp_path / "scan.png").write_bytes(b"a team's own file")
    message = str(_load_error(_dataset(tmp_path)))
    assert "conf/local/credentials.yml" in message
    assert "pseudonymisation:\n    key:" in message


def test_no_key_and_no_source_raises(tmp_path: Path) -> None:
    assert "No pseudonymisation key is configured" in str(_load_error(PseudonymisationKeyDataset()))
    assert "No pseudonymisation key is configured" in str(_load_error(_dataset(tmp_path / "missing")))


def test_no_key_and_the_untouched_public_sample_gives_the_sample_key(tmp_path: Path) -> None:
    assert _dataset(_sample_folder(tmp_path)).load() == PUBLIC_SAMPLE_KEY


def test_sample_with_one_extra_file_is_not_the_public_sample(tmp_path: Path) -> None:
    root = _sample_folder(tmp_path)
    (root / "masks" / "patient_scan.png").write_bytes(b"a team's own file")
    assert not is_public_sample(FileFolderDataset(path=str(root)).load())
    assert "conf/local/credentials.yml" in str(_load_error(_dataset(root)))


def test_sample_with_one_modified_byte_is_not_the_public_sample(tmp_path: Path) -> None:
    root = _sample_folder(tmp_path)
    target = root / "fundus_01.png"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01
    target.write_bytes(bytes(data))
    assert not is_public_sample(FileFolderDataset(path=str(root)).load())
    assert "conf/local/credentials.yml" in str(_load_error(_dataset(root)))


def test_sample_with_a_missing_file_or_broken_manifest_is_not_the_public_sample(tmp_path: Path) -> None:
    root = _sample_folder(tmp_path / "a")
    (root / "fundus_01.png").unlink()
    assert not is_public_sample(FileFolderDataset(path=str(root)).load())
    broken = _sample_folder(tmp_path / "b")
    (broken / PUBLIC_SAMPLE_MANIFEST).write_text("{not json")
    assert not is_public_sample(FileFolderDataset(path=str(broken)).load())


def test_describe_never_contains_the_key(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path, {"key": SECRET})
    for text in (str(dataset._describe()), str(dataset), repr(dataset)):
        assert SECRET not in text
    assert dataset._describe() == {"configured": True}


def test_save_is_refused() -> None:
    # Kedro refuses None before the dataset's own save runs, so save a real value.
    with pytest.raises(DatasetError, match="read-only"):
        PseudonymisationKeyDataset(credentials={"key": SECRET}).save(b"a new key")
