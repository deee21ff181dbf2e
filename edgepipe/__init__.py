"""edgepipe: real-time face detection, expression recognition and classification as asyncio actors.

One import root over the repository's folders: ``edgepipe.bus`` (the wire, the only code that
knows ZeroMQ), ``edgepipe.models`` (engines, model families, the model store), ``edgepipe.actors``
(the actor runtime, sources, sinks and the stages) and ``edgepipe.pipeline`` (config, runner,
process groups, command line, benchmarks, ops tools).

An install maps them here (``pyproject.toml``: ``package-dir``). In a source checkout that was not
installed (``python run.py`` from the repository, a group process started with the checkout on
``PYTHONPATH``), the folders sit beside this one, so the checkout's root joins this package's path.
"""
import os

__version__ = "0.1.0"

_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the project's folder: config.toml, constraints/, the TPU venv (.venv-tpu) and the model cache's default
ROOT = _CHECKOUT
if all(os.path.isdir(os.path.join(_CHECKOUT, d)) for d in ("actors", "bus", "models", "pipeline")) \
        and os.path.isfile(os.path.join(_CHECKOUT, "pyproject.toml")):
    __path__.append(_CHECKOUT)  # type: ignore[name-defined]  # edgepipe.actors -> CHECKOUT/actors
