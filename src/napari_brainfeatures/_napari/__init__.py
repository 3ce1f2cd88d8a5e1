"""napari adapters: the reader, the labels writer and the sample data (npe2 manifest)."""
