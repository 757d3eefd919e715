"""Data: formats, TFDS builders, grain pipelines, document segmentation."""
