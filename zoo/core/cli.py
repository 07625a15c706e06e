"""The command line of train.py and evaluate.py, checked before Hydra runs: an unknown key or an
unknown group option is one ConfigError naming the closest valid ones, where Hydra would print
several lines, its config search path, and a hint (``+key=value``) that leads to a second error.
A multirun (``-m``) is checked too, through the jobs its sweeps make.

Only these mistakes, and a group the entry point doesn't have, are translated; any other error
is left to Hydra, which reports it as it always has when ``@hydra.main`` composes the same
command line again. The command line itself goes to Hydra unchanged.
"""

from __future__ import annotations

import difflib
import itertools
import os
import sys
from collections.abc import Callable, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.config_loader import ConfigLoader
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from zoo.core.config import CONFIG_DIR
from zoo.core.errors import ConfigError, exit_on_user_error
from zoo.core.trainer import register_configs

MULTIRUN_FLAGS = ("-m", "--multirun")


def check_command_line(config_name: str, argv: Sequence[str]) -> None:
    """Compose zoo/configs/<config_name>.yaml with the overrides in ``argv`` (``sys.argv[1:]``)
    only to check them; raise ConfigError for an unknown key or group option.

    With ``-m``/``--multirun``, the jobs of :func:`multirun_jobs` are composed in turn. A
    command line with any other flag (``--help``, ``--cfg``, ``--info`` ...) is Hydra's to
    handle, and so is every error under HYDRA_FULL_ERROR=1, which shows Hydra's full trace."""
    overrides = [arg for arg in argv if arg not in MULTIRUN_FLAGS]
    if os.environ.get("HYDRA_FULL_ERROR") == "1" or any(arg.startswith("-") for arg in overrides):
        return
    register_configs()
    jobs = [overrides]
    if len(overrides) < len(argv):
        try:
            jobs = multirun_jobs(overrides)
        except HydraException:
            return  # a malformed override or sweep: Hydra reports it
    for job in jobs:
        _check_job(config_name, job)


def run_command_line(config_name: str, job: Callable[[], object]) -> None:
    """The console command's main (zoo-train, zoo-evaluate; train.py and evaluate.py in a
    checkout): the command line in sys.argv checked first, an unknown key or group option one
    line and exit 2 before Hydra's longer report, then ``job``, the module's Hydra main."""
    with exit_on_user_error():
        check_command_line(config_name, sys.argv[1:])
    job()


def multirun_jobs(overrides: Sequence[str]) -> list[list[str]]:
    """Command lines of single jobs that, composed, check every value of a multirun's
    ``overrides`` that can be unknown: all options of a swept group (each with the other
    overrides at their first value), and a swept key once, at its first value (its values are
    for the job to check: a range can be long). An interval (for sweepers such as Optuna's)
    counts as its start."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        # With the loader, a glob (model=glob(res*)) expands to the group's options.
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(list(overrides))
        choices: list[list[str]] = []
        for override in parsed:
            key, sweep = override.get_key_element(), override.value()
            if override.is_discrete_sweep():
                values = (f"{key}={value}" for value in override.sweep_string_iterator())
                whole = _is_group(loader, override.key_or_group)
                choices.append(list(values if whole else itertools.islice(values, 1)))
            elif isinstance(sweep, IntervalSweep):
                choices.append([f"{key}={sweep.start}"])
            else:
                choices.append([override.input_line])
    choices = [values for values in choices if values]  # a glob that matches nothing
    first = [values[0] for values in choices]
    return [first] + [
        [*first[:i], value, *first[i + 1 :]]
        for i, values in enumerate(choices)
        for value in values[1:]
    ]


def _is_group(loader: ConfigLoader, key: str) -> bool:
    """Whether ``key`` (``model``, ``hydra/launcher``) names a config group, not a value."""
    parent, _, name = key.rpartition("/")
    return name in loader.list_groups(parent)


def _check_job(config_name: str, overrides: Sequence[str]) -> None:
    """ConfigError if one job's ``overrides`` name an unknown key or group option."""
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            compose(config_name, overrides=list(overrides), return_hydra_config=True)
    except MissingConfigException as err:
        message = _unknown_option_message(err)
        if message is None:
            return
        raise ConfigError(message) from err
    except ConfigCompositionException as err:
        message = _unknown_key_message(err, overrides) or _foreign_group_message(
            config_name, overrides
        )
        if message is None:
            return
        raise ConfigError(message) from err
    except (HydraException, OmegaConfBaseException):
        return  # a malformed override and the like: Hydra reports it, composing it again


def _unknown_option_message(err: MissingConfigException) -> str | None:
    """A group option that doesn't exist, the closest options first, then the others in Hydra's
    order: "model=resnet81 is not an option of model; one of: resnet18, resnet34, ..."."""
    if not err.options or not err.missing_cfg_file or "/" not in err.missing_cfg_file:
        return None
    group, option = err.missing_cfg_file.rsplit("/", 1)
    options = list(err.options)
    closest = difflib.get_close_matches(option, options, n=3)
    # Equally close ones in Hydra's order: resnet81 -> resnet18, resnet34, resnet50.
    closest.sort(key=lambda name: (-_similarity(option, name), options.index(name)))
    ordered = closest + [name for name in options if name not in closest]
    return f"{group}={option} is not an option of {group}; one of: {', '.join(ordered)}"


def _similarity(a: str, b: str) -> float:
    """The score difflib.get_close_matches ranks by."""
    return difflib.SequenceMatcher(None, a, b).ratio()


def _unknown_key_message(err: ConfigCompositionException, argv: Sequence[str]) -> str | None:
    """A key that doesn't exist: "trainer.max_epoch is not a key of the config; did you mean
    trainer.max_epochs?". Read from the OmegaConf error that Hydra's "Could not override" wraps:
    it names the first segment of the key that does not exist, and the node that lacks it."""
    cause = err.__cause__
    if not isinstance(cause, ConfigAttributeError | ConfigKeyError):
        return None
    parent = cause.parent_node
    if not isinstance(parent, DictConfig) or not cause.full_key:
        return None
    missing = str(cause.key)
    typed = _typed_key(cause.full_key, argv)
    *parents, _ = cause.full_key.split(".")
    valid = [str(key) for key in parent]
    closest = difflib.get_close_matches(missing, valid, n=1)
    if closest:
        # The typed key with its missing segment replaced: trainr.max_epochs -> trainer.max_epochs
        meant = ".".join([*parents, closest[0]]) + typed[len(cause.full_key) :]
        return f"{typed} is not a key of the config; did you mean {meant}?"
    where = ".".join(parents) or "the config"
    return f"{typed} is not a key of the config; keys of {where}: {', '.join(valid)}"


def _foreign_group_message(config_name: str, argv: Sequence[str]) -> str | None:
    """A group of zoo/configs/ that this entry point's defaults list lacks (Hydra: "No match in the
    defaults list"): "optimizer=nope: evaluate has no optimizer group; its groups: ..."."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        groups = GlobalHydra.instance().config_loader().list_groups("")
        try:
            own = compose(config_name, return_hydra_config=True).hydra.runtime.choices
        except ConfigCompositionException:
            return None
    for override in OverridesParser.create().parse_overrides(list(argv)):
        group = override.key_or_group
        if override.is_add() or override.is_delete() or group not in groups or group in own:
            continue
        valid = sorted(name for name in own if not name.startswith("hydra"))
        closest = difflib.get_close_matches(group, valid, n=1)
        ordered = closest + [name for name in valid if name not in closest]
        return (
            f"{override.input_line}: {config_name} has no {group} group; "
            f"its groups: {', '.join(ordered)}"
        )
    return None


def _typed_key(full_key: str, argv: Sequence[str]) -> str:
    """The key as the command line wrote it, of which ``full_key`` is the first missing part."""
    for override in OverridesParser.create().parse_overrides(list(argv)):
        key = override.key_or_group
        if key == full_key or key.startswith(f"{full_key}."):
            return key
    return full_key
