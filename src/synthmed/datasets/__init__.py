"""Custom Kedro datasets: file I/O only, no domain logic.

- ``ArrayStoreDataset``: a folder of ``.npy`` arrays (pickle-free, memory-mapped on load).
- ``FileFolderDataset``: a folder of files; loads as a lazy ``SourceFolder`` listing and
  saves objects (bytes, text, tables, NIfTI images, DICOM datasets, PNG arrays) by suffix.
- ``FigureDataset``: a matplotlib figure as PNG, without importing matplotlib until a node draws.
- ``MetricsDataset``: flat ``dict[str, float]`` to JSON (DVC metrics) and to MLflow.
- ``PseudonymisationKeyDataset``: the pseudonymisation key from Kedro credentials.
- ``GeneratorDataset``: a trained generator (safetensors weights + config, checksummed).
- ``ClassifierDataset``: a trained feature encoder / classifier (safetensors, checksummed).
- ``BuildInfoDataset``: the versions a run is built from (package, git commit, dvc.lock, Kedro env).
"""

from synthmed.datasets.array_store import ArrayStore, ArrayStoreDataset
from synthmed.datasets.build_info import BuildInfoDataset
from synthmed.datasets.classifier import ClassifierDataset
from synthmed.datasets.figure import FigureDataset
from synthmed.datasets.file_folder import FileFolderDataset, SourceFolder
from synthmed.datasets.generator import GeneratorDataset
from synthmed.datasets.metrics import MetricsDataset
from synthmed.datasets.secrets import PseudonymisationKeyDataset

__all__ = [
    "ArrayStore",
    "ArrayStoreDataset",
    "BuildInfoDataset",
    "ClassifierDataset",
    "FigureDataset",
    "FileFolderDataset",
    "GeneratorDataset",
    "MetricsDataset",
    "PseudonymisationKeyDataset",
    "SourceFolder",
]
