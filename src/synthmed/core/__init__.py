"""The foundation layer: configuration parsing, checksums, atomic writes, table formats.

Nothing here imports torch, Kedro pipelines or any other synthmed package: every other
layer may import ``synthmed.core`` (docs/architecture.md).
"""
