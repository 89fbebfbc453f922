"""Each generator family's ``Config`` by name, importable without torch.

The parameter check (``synthmed.parameters``) builds every family's ``<family>.model`` block
before each run; the family modules (``registry``) carry the networks and so torch. The
``Config`` classes live in ``<family>_config`` modules, listed here; ``registry`` checks at import
that its families' ``config_cls`` are exactly these (a new family goes into both).
"""

from __future__ import annotations

from synthmed.generators import dcgan_config, ddpm_config, pix2pix3d_config, pix2pix_config

FAMILY_CONFIGS: dict[str, type] = {
    "ddpm": ddpm_config.Config,
    "pix2pix": pix2pix_config.Config,
    "dcgan": dcgan_config.Config,
    "pix2pix3d": pix2pix3d_config.Config,
}
