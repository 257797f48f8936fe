"""Dataset sources: each reads one on-disk layout into dermlit's index table.

The index table has at least ``image_id, path, label, lesion_id`` (label is one of
:data:`dermlit.constants.CLASSES`) and may carry metadata columns (age, sex, ...) and a ``split``
column when the dataset ships official splits.
"""

from dermlit.data.sources.ham10000 import HAM10000Source
from dermlit.data.sources.synthetic import SyntheticSource

__all__ = ["HAM10000Source", "SyntheticSource"]
