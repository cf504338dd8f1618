"""Training data: teacher labelling (``teacher``), photo crops with augmentation (``photos``), ground-truth sets
(``groundtruth``)."""
