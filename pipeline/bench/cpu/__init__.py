"""``bench pipeline --engine cpu``: the pipeline against the reference project's serial
loop on real faces, and the FER stage alone.
"""
