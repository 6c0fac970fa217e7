"""Data layer: file formats, transforms, episodes and dataset builders (strokes, Omniglot, Quick, Draw!)."""
