"""The generator families' names, importable without torch (``registry`` maps them to code).

Pipelines build one namespace per family when Kedro loads the project; importing the registry
there would load torch and diffusers for every ``kedro run``. ``registry`` checks at import
that its families are exactly these, in this order.

``FAMILY_NAMES`` are the image families, which the training, sampling, evaluation and
rebalancing pipelines run; ``VOLUME_FAMILY_NAMES`` the volume families (tensors
``(N, C, D, H, W)``), registered and trained by the same trainer but run by no default
pipeline yet (the volume study wires them).
"""

FAMILY_NAMES: tuple[str, ...] = ("ddpm", "pix2pix", "dcgan")
VOLUME_FAMILY_NAMES: tuple[str, ...] = ("pix2pix3d",)
