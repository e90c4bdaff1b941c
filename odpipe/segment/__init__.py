"""Semantic segmentation: mask formats, cleaning, mask TFRecords, U-Net and DeepLabV3+, losses,
training, sliding-window export, metrics, reports, serving and prediction. Imports only ``core``,
``data`` and ``engine``; the same file names as ``detect`` and ``classify`` for the same roles."""
