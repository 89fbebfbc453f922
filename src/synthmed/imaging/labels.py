"""The tissue labels of the test cohort's label maps (`synthmed.imaging.cohort` writes them), in a module
of their own: the volume family and the volume metrics read them without importing the cohort's builder."""

from __future__ import annotations

# LESION overwrites the tissue under the lesion mask (core + rim); EDEMA the grey or white matter of
# the perilesional edema shell around it, as tumour label maps mark it (BraTS: "peritumoral edema").
# The edema is not part of the lesion mask, but a model drawn from the label map needs to know where
# it is: FLAIR shows it brighter than the tissue it replaces.
BACKGROUND, CSF, GREY, WHITE, LESION, EDEMA = 0, 1, 2, 3, 4, 5
LABEL_NAMES = {BACKGROUND: "background", CSF: "csf", GREY: "grey_matter", WHITE: "white_matter", LESION: "lesion",
               EDEMA: "edema"}
