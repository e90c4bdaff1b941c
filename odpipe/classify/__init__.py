"""Image classification: class-folder and CSV formats, cleaning, class TFRecords, models,
training, export, metrics, reports (Grad-CAM included), serving and prediction. Imports only
``core``, ``data`` and ``engine``; the same file names as ``detect`` and ``segment``."""
