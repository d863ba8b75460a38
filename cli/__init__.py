"""The thin click layer (installed as ``reshape.cli``); each stage's command lives in its own module."""
