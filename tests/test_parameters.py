"""The parameter schema: every environment's parameters pass, and misspelt blocks, keys and
mistyped values are caught once, with their dotted path, before any node runs."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from synthmed.parameters import PARTIAL_BLOCKS, ParameterError, parameter_schema, validate_parameters
from tests.conftest import load_parameters

# Fields a node fills in itself rather than reading from the block (no YAML key).
SUPPLIED_BY_NODES = {"evaluation.memorisation": {"action"}}  # rebalancing's gate_action


@pytest.fixture(scope="module")
def base() -> dict:
    return load_parameters("base")


@pytest.mark.parametrize("env", ["base", "test", "gpu", "local", "template"])
def test_every_environment_passes_the_schema(env) -> None:
    validate_parameters(load_parameters(env))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.__setitem__("ddpmm", p["ddpm"]),
         r"Unknown parameter block\(s\) \['ddpmm'\]; valid blocks: \[.*'ddpm'.*\].*did you mean 'ddpm'"),
        (lambda p: p["ddpm"].__setitem__("trainng", p["ddpm"].pop("training")),
         r"Unknown key\(s\) \['trainng'\] in parameters 'ddpm'.*did you mean 'training'"),
        (lambda p: p["ddpm"]["training"].__setitem__("stpes", 10),
         r"Unknown key\(s\) \['stpes'\] in parameters 'ddpm\.training'.*did you mean 'steps'"),
        (lambda p: p["ddpm"]["sampling"]["sampler"].__setitem__("guidance_scale", "abc"),
         r"Parameter 'ddpm\.sampling\.sampler\.guidance_scale' must be a number, got 'abc' \(str\)"),
        (lambda p: p["preprocessing"]["intensity"]["CT"].__setitem__("windw_hu", [0, 1]),
         r"Unknown key\(s\) \['windw_hu'\] in parameters 'preprocessing\.intensity\.CT'"),
        (lambda p: p["evaluation"]["sources"]["slices"].__setitem__("image_px", "32"),
         r"'evaluation\.sources\.slices\.image_px' must be an integer, got '32' \(str\)"),
        (lambda p: p["evaluation"]["memorisation"]["search"].__setitem__("zooms", "1.0"),
         r"'evaluation\.memorisation\.search\.zooms' must be a list of numbers"),
        (lambda p: p["dcgan"]["sampling"]["plan"][1].__setitem__("cuont", 3),
         r"Unknown key\(s\) \['cuont'\] in parameters 'dcgan\.sampling\.plan\[1\]'"),
        (lambda p: p["extraction"]["preview"].pop("seed"),
         r"Missing key\(s\) \['seed'\] in parameters 'extraction\.preview'"),
        (lambda p: p["sample_data"]["fundus"].__setitem__("quantile", None),
         r"'sample_data\.fundus\.quantile' must be a number, got None"),
        # range rules of the dataclasses run too
        (lambda p: p["pix2pix"]["training"].__setitem__("steps", 0), r"steps and batch_size must be >= 1"),
    ],
)
def test_wrong_parameters_are_named_with_their_path(base, edit, message) -> None:
    params = copy.deepcopy(base)
    edit(params)
    with pytest.raises(ParameterError, match=message):
        validate_parameters(params)


def test_every_problem_is_reported_at_once(base) -> None:
    params = copy.deepcopy(base)
    params["ingestion"]["strict"] = "yes"
    params["rebalancing"]["ratio"] = "half"
    with pytest.raises(ParameterError, match=r"2 problem\(s\)") as raised:
        validate_parameters(params)
    assert "ingestion.strict" in str(raised.value) and "rebalancing.ratio" in str(raised.value)


def _blocks(tree: dict, path: str = ""):
    for key, value in tree.items():
        sub = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            yield sub, value
            yield from _blocks(value, sub)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for row in value:
                yield f"{sub}[]", row


def _entry(schema: dict, path: str) -> tuple[str, type] | None:
    if path in schema:
        return path, schema[path]
    wildcard = path.rpartition(".")[0] + ".*"
    return (wildcard, schema[wildcard]) if wildcard in schema else None


def test_conf_base_sets_every_field_so_no_dataclass_default_decides_a_run(base) -> None:
    """One source of values: conf/base spells out every field of every block it holds, so a
    pipeline run never falls back on a dataclass default. (Defaults stay for Python callers;
    several dataclasses serve several blocks with different values, e.g. SamplerSpec, so
    "default == YAML" cannot hold for them.)"""
    schema = parameter_schema()
    gaps = []
    for path, block in _blocks(base):
        found = _entry(schema, path)
        if found is None or found[0] in PARTIAL_BLOCKS or path.endswith("[]"):
            continue
        fields = {f.name for f in dataclasses.fields(found[1])} - SUPPLIED_BY_NODES.get(path, set())
        gaps += [f"{path}.{name}" for name in sorted(fields - set(block))]
    assert gaps == [], f"conf/base does not set: {gaps}"
