"""Object detection with the TF2 Object Detection API: annotation formats, cleaning, TFRecords,
label map, base models and pipeline.config, training (model_lib_v2), export, TFLite, evaluation
and serving. Imports only ``core``, ``data`` and ``engine``."""
