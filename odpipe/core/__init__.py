"""The bottom layer: project paths and params, files, manifests, worker pools, image decoding,
box geometry and drawing. No machine learning and no task here; imports nothing else of odpipe."""
