"""Devices: which one ``--device``/``--devices`` name, and what each runs best with.

Every per-device default lives here, so that a run resolves it once per device (the plan's
``DeviceRun``) and every replica of ``--devices`` gets the value of its own device.
"""

from __future__ import annotations

import os

from .errors import UsageError

# Windows per model call (--batch-size 0): on a CPU larger batches gain little and hold more
# audio in memory (batch 32 raised a 2-hour file's peak RSS from 1.36 to 2.25 GB for 13% less
# time, RESULTS.md); a GPU wants more work per call.
CPU_BATCH_SIZE = 16
GPU_BATCH_SIZE = 32
# Decoding processes a GPU needs to stay fed; a CPU leaves its cores to the model.
_MAX_GPU_WORKERS = 8


def pick_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; validates explicit names,
    a GPU index included."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {requested}: no CUDA device is available")
        index = requested.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            count = torch.cuda.device_count()
            raise UsageError(f"--device {requested}: no such GPU (this machine has {count}: cuda:0..cuda:{count - 1})")
        return requested
    if requested in ("cpu", "mps"):
        return requested
    raise UsageError(f"--device {requested}: expected auto, cpu, cuda or cuda:N")


def parse_devices(value: str) -> list[str]:
    """``"cuda:0,cuda:1"`` -> the list; ``"all"`` -> every visible GPU (or ``cpu``)."""
    import torch

    if value == "all":
        count = torch.cuda.device_count()
        return [f"cuda:{index}" for index in range(count)] or ["cpu"]
    devices = [name.strip() for name in value.split(",") if name.strip()]
    if not devices:
        raise UsageError("--devices: name at least one device")
    for name in devices:
        if not (name == "cpu" or name.startswith("cuda")):
            raise UsageError(f"--devices {value}: expected cpu, cuda:N or all")
        pick_device(name)  # a GPU that does not exist is a usage error, named
    return devices


def default_batch_size(device: str) -> int:
    """Windows per model call on ``device`` when the user asked for auto (0)."""
    return GPU_BATCH_SIZE if device.startswith("cuda") else CPU_BATCH_SIZE


def cores_for_this_process() -> int:
    """The cores this process may run on (its CPU affinity, as torch's DataLoader counts
    them), shared among the ranks a launcher started on the machine."""
    try:
        cores = len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1) if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else 1
    return max(1, cores // max(1, local_ranks))


def default_workers(device: str, cores: int, speakers: bool = False) -> int:
    """Decoding workers (--workers -1): enough to keep a GPU fed; on a CPU one, since the
    model needs the cores (none on a single core), or two with speaker labels: the speaker
    embeddings (CAM++, one thread, about 20x real time) are done in the decoding workers and
    made one worker the bottleneck (35 min of dev conversations on 2 cores: --speakers took
    170 s beside a plain run's 82 s with one worker, 123 s with two)."""
    if device.startswith("cuda"):
        return max(1, min(_MAX_GPU_WORKERS, cores - 1))
    if cores <= 1:
        return 0
    return 2 if speakers else 1
