"""Command-line tools of the library, run as ``python -m sts3d.tools.<name>``."""
