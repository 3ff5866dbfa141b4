"""Optional packages: a clear one-line error, naming the setting and the extra to install.

A plain ``pip install reid`` brings what training, evaluation, export and search need; the peer
torchreid (its zoo backbones ``torchreid:NAME`` and the study's reference engine) comes with
``reid[torchreid]``, TensorBoard logs (``output.tensorboard=true``) with ``reid[tensorboard]``,
and ``reid[dev]`` (what ``make setup`` installs) has both.
"""

from __future__ import annotations

import importlib.util

from .errors import ReidError

EXTRAS = {"torchreid": "torchreid", "tensorboard": "tensorboard"}


def available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, what: str) -> None:
    """Raise, naming ``what`` needs it, unless ``module`` can be imported."""
    if not available(module):
        extra = EXTRAS.get(module, module)
        raise ReidError(
            f"{what} needs the optional package {module}: pip install 'reid[{extra}]' "
            "(make setup installs every extra)"
        )


def require_torchreid(what: str) -> None:
    require("torchreid", what)
