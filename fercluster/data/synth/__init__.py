"""Synthetic FACS faces: the embedded default data sets and the ground truth for the FAU analysis.

``synth_ckplus(root, ...)`` writes a CK+ tree (images, Emotion, FACS, Landmarks, au_regions.json);
``synth_tfd(mat_path, ...)`` writes a TFD-style .mat plus ``<stem>.au_regions.json`` and
``<stem>.aus.parquet``. Both are deterministic for a seed and write atomically.
"""

from fercluster.data.synth.ckplus import synth_ckplus
from fercluster.data.synth.tfd import synth_tfd

__all__ = ["synth_ckplus", "synth_tfd"]
