"""The model store: the manifest of every known model, finding and fetching files (checked
by sha256), and ``run.py models``.
"""
