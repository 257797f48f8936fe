"""Explanations for review: Grad-CAM heat maps (``saliency``) and whether they point at the
lesion (``lesion_overlap``: saliency mass inside the lesion mask against a centred blob)."""
