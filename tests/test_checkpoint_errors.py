"""A checkpoint dw cannot run is one line and exit status 3, through dw transcribe and dw
eval alike, and never a traceback: a model that is not Whisper's, a config without the
fields dw needs, weights of another shape, damaged weights, no tokenizer."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest


def _edit_config(folder, change):
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def _not_whisper(folder, tokenizers=None):
    """A wav2vec2 CTC checkpoint's files, as facebook/wav2vec2-base-960h has them."""
    for name in list(folder.iterdir()):
        name.unlink()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["Wav2Vec2ForCTC"], "model_type": "wav2vec2", "hidden_size": 768, "num_hidden_layers": 12,
        "num_attention_heads": 12, "vocab_size": 32, "feat_extract_norm": "group"}))
    (folder / "vocab.json").write_text(json.dumps({"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4}))
    (folder / "model.safetensors").write_bytes(b"\0" * 64)


def _cut_short(folder, tokenizers=None):
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# What is wrong with the checkpoint -> what dw says after "cannot load model <folder>: ".
BROKEN = {
    "wav2vec2": (_not_whisper, "not a Whisper checkpoint (model_type 'wav2vec2')"),
    "fields missing": (lambda folder, _: _edit_config(folder, lambda config: [config.pop("d_model"),
                                                                          config.pop("decoder_layers")]),
                       "its config.json lacks d_model, decoder_layers"),
    # large-v3's vocabulary in the config, English-only weights: a checkpoint put together wrong.
    "weights of another shape": (lambda folder, _: _edit_config(folder, lambda config: config.update(vocab_size=51866)),
                                 "model.decoder.embed_tokens.weight has shape (51864, 64), the config implies "
                                 "(51866, 64)"),
    "not safetensors": (lambda folder, _: (folder / "model.safetensors").write_bytes(b"<html>rate limited</html>"),
                        "its model.safetensors is damaged (not a safetensors file, or cut short)"),
    "cut short": (_cut_short, "its model.safetensors is damaged (not a safetensors file, or cut short)"),
    "no tokenizer": (lambda folder, _: (folder / "tokenizer.json").unlink(), "it has no tokenizer.json"),
    # large-v3's tokenizer with an English-only model: every control token one or two ids off.
    "another vocabulary's tokenizer": (lambda folder, tokenizers: shutil.copy(tokenizers["v3"], folder),
                                       "its tokenizer has <|notimestamps|> at 50364, its generation_config.json "
                                       "at 50362"),
}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, jfk):
    folder = tmp_path_factory.mktemp("eval-set")
    shutil.copy(jfk["path"], folder / "jfk.flac")
    (folder / "dev.jsonl").write_text(json.dumps({"audio": "jfk.flac", "text": jfk["text"]}) + "\n")
    return folder / "dev.jsonl"


@pytest.mark.parametrize("command", ["transcribe", "eval"])
@pytest.mark.parametrize("broken", list(BROKEN))
def test_a_checkpoint_dw_cannot_run_is_one_line_and_exit_3(random_model_dir, tokenizer_files, tmp_path, dw_env, jfk,
                                                            manifest, broken, command):
    folder = tmp_path / "model"
    shutil.copytree(random_model_dir, folder)
    spoil, reason = BROKEN[broken]
    spoil(folder, tokenizer_files)
    source = str(jfk["path"]) if command == "transcribe" else str(manifest)
    output = ["--output-dir", str(tmp_path / "out")] if command == "transcribe" else []
    done = subprocess.run(["dw", command, source, "--model", str(folder), *output], env=dw_env,
                          capture_output=True, text=True, timeout=180)
    assert (done.returncode, done.stdout) == (3, "")
    assert done.stderr == f"Error: cannot load model {folder}: {reason}\n"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
