"""Versioned schemas of every artifact reshape writes (installed as ``reshape.data_manifests``)."""
