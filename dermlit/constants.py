"""Fixed label space shared by every part of dermlit (docs/design.md, "Contract")."""

from __future__ import annotations

#: HAM10000's seven diagnoses, in the order every tensor, CSV and plot uses.
CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
NUM_CLASSES = len(CLASSES)
CLASS_TO_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

#: Official HAM10000 class counts (10,015 images).
HAM10000_CLASS_COUNTS: dict[str, int] = {
    "akiec": 327,
    "bcc": 514,
    "bkl": 1099,
    "df": 115,
    "mel": 1113,
    "nv": 6705,
    "vasc": 142,
}

#: ISIC 2018 Task 3 submission column order and its mapping to our class names.
ISIC_COLUMNS: tuple[str, ...] = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
ISIC_TO_CLASS: dict[str, str] = {col: col.lower() for col in ISIC_COLUMNS}

#: Malignant diagnoses: missing one of these is the costly clinical error.
MALIGNANT: tuple[str, ...] = ("akiec", "bcc", "mel")
