"""Models: engines that run one model (``engines/``), model families that prepare inputs and
decode outputs (``families/``), and the model store that finds, fetches and checks files (``store/``).
"""
