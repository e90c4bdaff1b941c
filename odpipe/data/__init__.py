"""What every task's data stages share: dataset sources and downloads, the built-in synthetic
data, splitting and split files, offline augmentation, the annotation and index-mask formats,
TFRecord writing (features, shards, shuffled units) and the cleaning vocabulary (issues and
first copies). Imports only ``odpipe.core``."""
