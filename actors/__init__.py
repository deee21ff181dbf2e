"""The pipeline's actors: one module per actor, all built on ``actors.base.Actor``."""
