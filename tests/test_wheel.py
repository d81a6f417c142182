"""dw as a user installs it: the sdist and the wheel built from a clean copy of the
repository, the wheel installed into a new virtual environment (not editable), and every
command run there, outside the repository, so nothing can be imported from the checkout.

This is slow (a new environment: about a minute, torch's CPU wheel coming from pip's cache
or this machine's disk) and marked ``slow``; ``make test`` runs it, as CI does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from dwcli import __version__, docs

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parent.parent
# The CPU build of torch, as the Makefile installs it (a plain ``torch`` could pull a CUDA
# build of several GB): the user's own torch comes first, then dw.
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")
TIMEOUT_S = 900
# Where pip puts the man page and the completions under the environment's prefix (README).
INSTALLED_DOCS = {
    "share/man/man1/dw.1": docs.MAN_PAGE,
    "share/bash-completion/completions/dw.bash": Path("completions/dw.bash"),
    "share/zsh/site-functions/_dw": Path("completions/_dw"),
    "share/fish/vendor_completions.d/dw.fish": Path("completions/dw.fish"),
}


def _run(command: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed ({result.returncode}):\n{result.stderr[-3000:]}"
    return result


def _clean_copy(target: Path) -> Path:
    """The repository's tracked files (a clean clone's content), without the checkout's
    virtual environment, build folders or untracked files."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPOSITORY, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot tell tracked files from others")
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = REPOSITORY / name
        if source.is_file():
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    return target


def _source_modules() -> set[str]:
    return {path.relative_to(REPOSITORY).as_posix() for path in (REPOSITORY / "dwcli").rglob("*.py")}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(sdist, wheel): the sdist built from a clean copy, the wheel built from the sdist
    (so a file the sdist forgets is missing from the wheel too)."""
    work = tmp_path_factory.mktemp("wheel-build")
    source = _clean_copy(work / "source")
    dist = work / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)], cwd=work)
    (sdist,) = dist.glob("dw-*.tar.gz")
    (wheel,) = dist.glob("dw-*.whl")
    return sdist, wheel


def test_wheel_holds_every_module_and_data_file(built):
    _, wheel = built
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_source_modules() - names)
    assert not missing, f"the wheel lacks {missing}"
    data = f"dw-{__version__}.data/data/"
    for installed in INSTALLED_DOCS:
        assert data + installed in names, f"the wheel does not install {installed}"


def test_sdist_holds_every_module_and_data_file(built):
    sdist, _ = built
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    expected = _source_modules() | {path.as_posix() for path in INSTALLED_DOCS.values()} | {
        "pyproject.toml", "README.md"}
    missing = sorted(expected - names)
    assert not missing, f"the sdist lacks {missing}"


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory) -> Path:
    """A new virtual environment with CPU torch and the wheel (with its offline extra)."""
    _, wheel = built
    venv = tmp_path_factory.mktemp("wheel-venv") / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, TORCH_SPEC], cwd=venv.parent)
    _run([*pip, f"{wheel}[offline]"], cwd=venv.parent)
    return venv


@pytest.fixture(scope="module")
def user_env(installed, tmp_path_factory) -> dict[str, str]:
    """A user's environment: the new venv's bin first on PATH, a model cache of its own
    (so the installed dw converts the offline model itself), no hub, no DW_* settings."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DW_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{installed / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", HF_HUB_OFFLINE="1",
               DW_CACHE_DIR=str(tmp_path_factory.mktemp("wheel-cache")))
    return env


@pytest.fixture()
def outside(tmp_path) -> Path:
    """A working folder outside the repository: nothing can be imported from the checkout."""
    return tmp_path


def test_installed_dw_is_the_wheel_not_the_checkout(installed, user_env, outside):
    where = _run([str(installed / "bin" / "python"), "-c", "import dwcli, sys; print(dwcli.__file__)"],
                 cwd=outside, env=user_env).stdout.strip()
    assert Path(where).is_relative_to(installed), where


def test_installed_dw_help(installed, user_env, outside):
    assert "transcribe" in _run(["dw", "--help"], cwd=outside, env=user_env).stdout
    assert "--format" in _run(["dw", "transcribe", "--help"], cwd=outside, env=user_env).stdout


def test_installed_dw_transcribes_and_evaluates(installed, user_env, outside, speech):
    clip = speech["jfk.flac"]["path"]
    path = _run(["dw", "models", "offline-path"], cwd=outside, env=user_env).stdout.strip()
    assert Path(path).is_relative_to(user_env["DW_CACHE_DIR"]) and (Path(path) / "config.json").is_file()

    _run(["dw", "transcribe", str(clip), "--model", "offline:tiny.en", "--format", "srt,json", "-o", "out"],
         cwd=outside, env=user_env)
    srt = (outside / "out" / "jfk.srt").read_text()
    assert srt.startswith("1\n00:00:00,") and "what your country can do for you" in srt
    transcript = json.loads((outside / "out" / "jfk.json").read_text())
    assert transcript["model"] == "offline:tiny.en" and "fellow americans" in transcript["text"].lower()

    clips = [entry for name, entry in speech.items() if name.endswith((".flac", ".wav"))][:2]
    manifest = outside / "two.jsonl"
    manifest.write_text("".join(json.dumps({"audio": str(entry["path"]), "text": entry["text"]}) + "\n"
                                for entry in clips))
    result = json.loads(_run(["dw", "eval", str(manifest), "--model", "offline:tiny.en", "--json"],
                             cwd=outside, env=user_env).stdout)
    assert result["files"] == 2 and result["failed"] == 0 and result["wer"] < 25


def test_installed_man_page_and_completions_land_under_share(installed, user_env, outside):
    for installed_path, source in INSTALLED_DOCS.items():
        assert (installed / installed_path).read_text() == (REPOSITORY / source).read_text(), installed_path
    if shutil.which("man") is not None:
        # man finds the page through PATH (bin/ -> ../share/man), as README says.
        env = {key: value for key, value in user_env.items() if key != "MANPATH"}
        found = subprocess.run(["man", "-w", "dw"], cwd=outside, env=env, capture_output=True, text=True)
        assert found.returncode == 0 and Path(found.stdout.strip()).resolve() == (
            installed / "share/man/man1/dw.1").resolve(), found.stdout + found.stderr
