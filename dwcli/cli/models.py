"""``dw models``: convert and locate models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import DwError, UsageError
from .app import fail, models_app


@models_app.command("convert")
def models_convert(
    source: Annotated[Path, typer.Argument(
        help="A CTranslate2 Whisper checkpoint folder (model.bin, config.json, tokenizer.json).")],
    destination: Annotated[Path, typer.Argument(help="Folder to write the transformers checkpoint to.")],
    storage_dtype: Annotated[str, typer.Option(
        "--storage-dtype", help="Precision to store the weights in: float16 or float32.")] = "float16",
) -> None:
    """Convert a CTranslate2 (faster-whisper) Whisper checkpoint for transformers.

    Example: dw models convert ~/models/faster-whisper-small.en small.en-hf
    """
    from ..convert import convert_ct2_checkpoint

    if storage_dtype not in ("float16", "float32"):
        raise fail(UsageError(f"--storage-dtype {storage_dtype}: expected float16 or float32"))
    try:
        convert_ct2_checkpoint(source, destination, dtype=storage_dtype)
    except DwError as error:
        raise fail(error) from None
    typer.echo(str(destination))


@models_app.command("offline-path")
def models_offline_path() -> None:
    """Print the folder of the converted offline model (tiny.en), converting it if needed.

    Example: dw models offline-path
    """
    from ..models import OFFLINE_MODEL, resolve_model

    try:
        typer.echo(str(resolve_model(OFFLINE_MODEL, "cpu").path))
    except DwError as error:
        raise fail(error) from None
