"""Datasets: upstream-format loaders (DATA_ROOT), the download helper and procedural generators."""
