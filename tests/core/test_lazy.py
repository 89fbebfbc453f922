"""Lazy node functions meet Kedro's parameter type check quietly."""

from __future__ import annotations

import logging

from kedro.framework.project import configure_project
from kedro.validation.type_extractor import TypeExtractor

from synthmed.core.lazy import lazy_module


def test_kedro_type_extraction_warns_about_no_lazy_node(caplog: object) -> None:
    configure_project("synthmed")
    from synthmed.pipeline_registry import register_pipelines

    pipelines = register_pipelines()
    with caplog.at_level(logging.WARNING, logger="kedro.validation.type_extractor"):
        TypeExtractor(pipelines).extract_types_from_pipelines()
    warnings = [r.getMessage() for r in caplog.records if "Could not extract type hints" in r.getMessage()]
    assert warnings == []


def test_stand_in_does_not_import_its_module_for_the_type_check() -> None:
    import sys
    import typing

    lazy = lazy_module("synthmed_no_such_module").node_function
    assert typing.get_type_hints(lazy) == {}
    assert "synthmed_no_such_module" not in sys.modules
