"""kedro-viz previews of synthmed's datasets, read through kedro-viz's own metadata model."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synthmed.datasets import (
    ArrayStoreDataset,
    BuildInfoDataset,
    ClassifierDataset,
    FileFolderDataset,
    GeneratorDataset,
    MetricsDataset,
)


def viz_preview(dataset, name: str = "d") -> tuple[str | None, object]:
    """``(preview_type, preview)`` as kedro-viz 12.5 computes them for the dataset's panel."""
    from kedro_viz.models.flowchart.node_metadata import DataNodeMetadata
    from kedro_viz.models.flowchart.nodes import GraphNode

    node = GraphNode.create_data_node(dataset_id=name, dataset_name=name, layer=None, tags=set(), dataset=dataset,
                                      modular_pipelines=set())
    metadata = DataNodeMetadata(data_node=node)
    return metadata.preview_type, metadata.preview


def _png(preview: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(preview))))


def test_array_stores_preview_as_an_image_grid(tmp_path):
    images = np.stack([np.full((1, 8, 8), k / 10 - 0.5, np.float32) for k in range(6)])
    images[:, :, :4] = -1.0  # each image has a dark half
    ArrayStoreDataset(path=str(tmp_path / "slices")).save({"images": images})
    kind, preview = viz_preview(ArrayStoreDataset(path=str(tmp_path / "slices")))
    assert kind == "ImagePreview"
    grid = _png(preview)
    assert grid.shape == (2 * 66, 4 * 66, 3)  # 6 tiles of 64 px, 4 per row, 2 px gaps
    assert grid[:64, :64].min() == 0 and grid[:64, :64].max() == 255  # scaled over its own range
    # A store of volumes (ingested items): their middle slices.
    volumes = {"a": np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), "b": np.ones((7, 9), np.float32)}
    ArrayStoreDataset(path=str(tmp_path / "vol")).save(volumes)
    assert _png(ArrayStoreDataset(path=str(tmp_path / "vol")).preview()).shape == (66, 2 * 66, 3)


def test_folders_preview_their_metadata_table_or_their_listing(tmp_path):
    table = pd.DataFrame({"file_name": ["images/a/1.png", "images/b/2.png"], "is_synthetic": [False, True]})
    FileFolderDataset(path=str(tmp_path / "published")).save({"metadata.csv": table, "labels.csv": table,
                                                             "images/a/1.png": np.zeros((4, 4), np.uint8)})
    kind, preview = viz_preview(FileFolderDataset(path=str(tmp_path / "published")))
    assert kind == "TablePreview"
    assert preview["columns"] == ["file_name", "is_synthetic"] and preview["data"][1] == ["images/b/2.png", True]
    FileFolderDataset(path=str(tmp_path / "raw")).save({"x/1.txt": "one", "2.txt": "two!"})
    _, listing = viz_preview(FileFolderDataset(path=str(tmp_path / "raw")))
    assert listing["columns"] == ["path", "bytes"] and listing["data"] == [["2.txt", 4], ["x/1.txt", 3]]
    # A raw folder (not written by synthmed: no checksum listing) is not previewed.
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "labels.csv").write_text("path,label,patient\nDOE_JOHN.png,lesion,DOE\n")
    assert viz_preview(FileFolderDataset(path=str(tmp_path / "own"))) == ("TablePreview", None)


def test_metrics_models_and_build_info_preview_as_json(tmp_path):
    MetricsDataset(path=str(tmp_path / "m.json")).save({"fidelity.fid": 12.5})
    kind, preview = viz_preview(MetricsDataset(path=str(tmp_path / "m.json")))
    assert kind == "JSONPreview" and json.loads(preview) == {"fidelity.fid": 12.5}
    for cls, name in ((GeneratorDataset, "generator.json"), (ClassifierDataset, "classifier.json")):
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        (folder / name).write_text(json.dumps({"format": "x", "config": {"image_size": 16}}))
        kind, preview = viz_preview(cls(path=str(folder)))
        assert kind == "JSONPreview" and json.loads(preview)["config"] == {"image_size": 16}, name
    kind, preview = viz_preview(BuildInfoDataset(project_path=str(tmp_path), env="test"))
    assert kind == "JSONPreview" and json.loads(preview)["kedro_env"] == "base+test"


@pytest.mark.parametrize("dataset", ["slices", "rebalanced_dataset", "rebalancing_gate_metrics", "build_info"])
def test_project_catalog_entries_have_previews(dataset):
    import yaml
    from kedro.io import DataCatalog

    from tests.conftest import PROJECT_ROOT

    config = yaml.safe_load((PROJECT_ROOT / "conf/base/catalog.yml").read_text())
    assert callable(getattr(DataCatalog.from_config({dataset: config[dataset]}).get(dataset), "preview", None))


def test_the_answer_key_has_no_preview_in_kedro_viz(tmp_path):
    import yaml
    from kedro.io import DataCatalog

    from tests.conftest import PROJECT_ROOT

    entry = yaml.safe_load((PROJECT_ROOT / "conf/base/catalog.yml").read_text())["reader_key"]
    entry["filepath"] = str(tmp_path / "answer_key.csv")
    catalog = DataCatalog.from_config({"reader_key": entry})
    catalog.save("reader_key", pd.DataFrame({"image_id": ["a"], "truth": ["synthetic"]}))
    dataset = catalog.get("reader_key")
    from kedro_viz.models.flowchart.node_metadata import DataNodeMetadata
    from kedro_viz.models.flowchart.nodes import GraphNode

    node = GraphNode.create_data_node(dataset_id="k", dataset_name="reader_key", layer="reporting", tags=set(),
                                      dataset=dataset, modular_pipelines=set())
    assert node.viz_metadata is not None and DataNodeMetadata(data_node=node).preview is None
