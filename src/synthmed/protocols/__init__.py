"""Protocols: how generators, metrics and the privacy gate are combined into results.

- ``evaluation``: the evaluation protocol (docs/evaluation.md): the same real splits, sizes
  and feature space for every family; fidelity with floors, memorisation, utility, figures,
  the family comparison, the report and the reader kit.
- ``rebalancing``: the rebalancing plan, generation, the memorisation gate before
  publishing and the published folder with its dataset card.

Pipelines call these functions with parsed configuration; nothing here knows Kedro.
"""
