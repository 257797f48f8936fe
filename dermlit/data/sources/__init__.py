"""Dataset sources: each reads one on-disk layout into dermlit's index table.

The index table has at least ``image_id, path, label, lesion_id`` (label is one of
:data:`dermlit.constants.CLASSES`, or empty for unlabelled images) and may carry metadata
columns (age, sex, ...) and a ``split`` column when the dataset ships official splits. A source
whose images come from several clinics or devices names that column in ``source_column``
(HAM10000: ``dataset``; None or absent: it has none), read by the per-source metrics and by
the ``by_source`` split.
"""

from dermlit.data.sources.csv_source import CSVSource
from dermlit.data.sources.folder import FolderSource
from dermlit.data.sources.ham10000 import HAM10000Source
from dermlit.data.sources.isic2019 import ISIC2019Source
from dermlit.data.sources.isic_csv import IsicCsvSource
from dermlit.data.sources.medmnist import MedMNISTSource
from dermlit.data.sources.synthetic import SyntheticSource

__all__ = [
    "CSVSource",
    "FolderSource",
    "HAM10000Source",
    "ISIC2019Source",
    "IsicCsvSource",
    "MedMNISTSource",
    "SyntheticSource",
]
