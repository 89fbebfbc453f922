"""The generator families' names, importable without torch (``registry`` maps them to code).

Pipelines build one namespace per family when Kedro loads the project; importing the registry
there would load torch and diffusers for every ``kedro run``. ``registry`` checks at import
that its families are exactly these, in this order.
"""

FAMILY_NAMES: tuple[str, ...] = ("ddpm", "pix2pix", "dcgan")
