"""The tissue labels of the test cohort's label maps (`synthmed.imaging.cohort` writes them), in a module
of their own: the volume family and the volume metrics read them without importing the cohort's builder."""

from __future__ import annotations

# LESION overwrites the tissue under the lesion mask.
BACKGROUND, CSF, GREY, WHITE, LESION = 0, 1, 2, 3, 4
LABEL_NAMES = {BACKGROUND: "background", CSF: "csf", GREY: "grey_matter", WHITE: "white_matter", LESION: "lesion"}
