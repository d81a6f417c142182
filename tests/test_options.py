"""Options are declared once: every command that takes an option takes the one declaration
of it (``dwcli.cli.groups``), with the default its options dataclass declares
(``dwcli.options``); the dataclasses check their own values and the CLI names the flag."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dwcli import docs
from dwcli.cli import groups
from dwcli.decoding import DecodingOptions
from dwcli.errors import InvalidOption, UsageError
from dwcli.options import LabelOptions, ModelChoice, SpeakerOptions, SubtitleOptions, TrainOptions, TranscribeOptions, VadOptions


def _declarations() -> dict[str, groups.Flag]:
    """Every option flag a group declares, by parameter name (one declaration each)."""
    found: dict[str, groups.Flag] = {}
    for value in vars(groups).values():
        flags = value.flags if isinstance(value, groups.Group) else (value,) if isinstance(value, groups.Flag) else ()
        for flag in flags:
            assert found.setdefault(flag.name, flag) is flag, f"{flag.name} is declared twice"
    return found


def test_every_shared_option_comes_from_its_one_declaration():
    """Walk every command: an option that two commands take is the same declaration, with
    the same flags, help, variable and default."""
    declarations = _declarations()
    seen: dict[str, tuple] = {}
    for context, command in docs.walk():
        for parameter in command.get_params(context):
            if parameter.param_type_name != "option" or parameter.name == "help":
                continue
            spelled = (tuple(parameter.opts + parameter.secondary_opts), parameter.help, parameter.envvar,
                       parameter.default)
            if parameter.name in seen:
                assert spelled == seen[parameter.name], f"{parameter.name} differs between commands"
            seen[parameter.name] = spelled
            flag = declarations.get(parameter.name)
            if flag is not None:
                assert parameter.default == flag.default, f"{context.command_path} {parameter.name}"
    shared = [name for name in seen if name in declarations]
    assert {"batch_size", "vad_min_silence_ms", "temperature", "model", "quiet"} <= set(shared)


@pytest.mark.parametrize("group, expected", [
    (groups.SPEECH_GROUP, VadOptions()),
    (groups.SUBTITLES_GROUP, SubtitleOptions()),
    (groups.TRAINING_GROUP, TrainOptions()),
    (groups.LABELLING_GROUP, LabelOptions()),
    (groups.MODEL_GROUP, ModelChoice()),
    (groups.RUN_GROUP, TranscribeOptions()),
])
def test_a_group_at_its_defaults_builds_the_dataclass_defaults(group, expected):
    assert groups.built(group, {flag.name: flag.default for flag in group.flags}) == expected


def test_decoding_defaults_are_the_dataclass_defaults():
    group = groups.DECODING_WITH_WORDS_GROUP
    chosen = groups.built(group, {flag.name: flag.default for flag in group.flags})
    # The chunked mode (the default) records that it reads no previous text.
    assert chosen.options == replace(DecodingOptions(), condition_on_previous_text=False)
    assert chosen.long_form == TranscribeOptions().long_form
    sequential = groups.built(group, {**{flag.name: flag.default for flag in group.flags}, "long_form": "sequential"})
    assert sequential.options == DecodingOptions()


@pytest.mark.parametrize("make, field", [
    (lambda: VadOptions(threshold=1.5), "threshold"),
    (lambda: SubtitleOptions(max_cps=float("nan")), "max_cps"),
    (lambda: TranscribeOptions(batch_size=300), "batch_size"),
    (lambda: TranscribeOptions(long_form="sideways"), "long_form"),
    (lambda: DecodingOptions(beam_size=0), "beam_size"),
    (lambda: DecodingOptions(temperatures=(0.4, 0.2)), "temperatures"),
    (lambda: TrainOptions(ce_weight=0, kl_weight=0), "kl_weight"),
])
def test_dataclasses_check_themselves(make, field):
    with pytest.raises(InvalidOption) as error:
        make()
    assert error.value.field == field


def test_an_invalid_value_is_named_by_its_flag():
    group = groups.TRAINING_GROUP
    values = {flag.name: flag.default for flag in group.flags}
    with pytest.raises(UsageError) as error:
        groups.built(group, {**values, "train_batch_size": 0})
    assert str(error.value) == "--train-batch-size 0: expected 1 or more"
    with pytest.raises(UsageError) as error:
        groups.built(group, {**values, "kl_temperature": -1.0})
    assert str(error.value) == "--kl-temperature -1: expected a positive number"


def test_auto_batch_size_and_workers_are_resolved_per_device():
    options = TranscribeOptions()
    assert not options.resolved
    cpu, gpu = options.for_device("cpu", cores=2), options.for_device("cuda:0", cores=16)
    assert (cpu.batch_size, cpu.workers) == (16, 1) and (gpu.batch_size, gpu.workers) == (32, 8)
    assert TranscribeOptions(batch_size=3, workers=0).for_device("cuda:0", cores=16).batch_size == 3
    # Speaker embeddings are made in the decoding workers: two of them on a CPU, none on one core.
    labelled = TranscribeOptions(speakers=SpeakerOptions())
    assert [labelled.for_device("cpu", cores=cores).workers for cores in (1, 2, 8)] == [0, 2, 2]
    assert labelled.for_device("cuda:0", cores=16).workers == 8
