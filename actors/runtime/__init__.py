"""The actor runtime: the ``Actor`` base and its lifecycle, task groups, metrics and loss
accounting, and how an actor gets and runs its engine.
"""
