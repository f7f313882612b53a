"""Argument groups shared by several commands (calibration data, knowledge analysis, criterion options), and the
flags made from config dataclasses (a method's options, the training loop's)."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Iterable

from lorashear.data import PRETRAIN_CORPORA
from lorashear.errors import LorashearError
from lorashear.importance import CalibrationConfig
from lorashear.knowledge import KnowledgeConfig
from lorashear.models import DTYPES, PLACEMENTS, Placement
from lorashear.prune.options import option_names
from lorashear.train.config import LoopConfig

if typing.TYPE_CHECKING:
    from lorashear.prune.methods import Method


def add_dtype_arg(p: argparse.ArgumentParser) -> None:
    """--dtype: the weights' dtype of every model the command loads."""
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="weights' dtype (default auto: bfloat16 on a CUDA GPU that supports it, else float32)")


def add_placement_args(p: argparse.ArgumentParser) -> None:
    """--device-map, --max-memory, --offload-folder: a model larger than one device, spread over several (accelerate's
    big-model inference; `models.Placement`)."""
    g = p.add_argument_group("a model larger than one device (forward passes only; training shards with FSDP)")
    g.add_argument("--device-map", choices=PLACEMENTS, default=None,
                   help="spread the model's layers over the GPUs (and the CPU/disk beyond --max-memory); default: "
                        "the whole model on one device")
    g.add_argument("--max-memory", default=None, metavar="DEV=SIZE,...",
                   help="memory per device for --device-map, e.g. 0=20GiB,1=20GiB,cpu=60GiB (default: what each has)")
    g.add_argument("--offload-folder", default=None, metavar="DIR",
                   help="where layers offloaded to disk go (--device-map with a disk share)")


def placement_of(args: argparse.Namespace) -> Placement | None:
    """The `Placement` the flags of `add_placement_args` ask for (None: the whole model on one device)."""
    if args.device_map is None:
        if args.max_memory is not None or args.offload_folder is not None:
            raise LorashearError("--max-memory and --offload-folder go with --device-map; add --device-map auto")
        return None
    memory = Placement.parse_max_memory(args.max_memory) if args.max_memory is not None else None
    return Placement(args.device_map, memory, args.offload_folder)


def split_list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def add_calibration_args(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    """--data, --calib-samples, --seq-len, --batch-size; `defaults=False` leaves the shared ones None
    (`lorashear prune` fills them from a trained method's recipe, else from `fill_calibration_defaults`)."""
    g = p.add_argument_group("calibration data (training corpora only; evaluation sets are refused)")
    g.add_argument("--data", type=split_list, default=PRETRAIN_CORPORA if defaults else None, metavar="LIST",
                   help=f"corpora or local files, comma-separated (default: {','.join(PRETRAIN_CORPORA)}); "
                        "a trained method also trains on them")
    g.add_argument("--calib-samples", type=int, default=64, metavar="N",
                   help="calibration sequences for scoring (default 64)")
    g.add_argument("--seq-len", type=int, default=256 if defaults else None, metavar="L",
                   help="tokens per sequence (default 256)")
    g.add_argument("--batch-size", type=int, default=4 if defaults else None, metavar="B",
                   help="sequences per forward pass (default 4; a trained method's per-process training batch)")


def fill_calibration_defaults(args: argparse.Namespace, data=PRETRAIN_CORPORA, seq_len: int = 256,
                              batch_size: int = 4) -> None:
    """Give --data, --seq-len and --batch-size the values passed here where the command line gave none."""
    for name, value in (("data", data), ("seq_len", seq_len), ("batch_size", batch_size)):
        if getattr(args, name) is None:
            setattr(args, name, value)


# ---------------------------------------------------------------------- flags made from config dataclasses


def option_flag(f: dataclasses.Field) -> str:
    """A config field's flag: its metadata's `flag`, else --the-field-name."""
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _value_type(cls: type, f: dataclasses.Field):
    """What the command line gives for field `f` of `cls`: bool (a switch), dict (KEY=VALUE items), list, or a
    parser of one value (the metadata's `type`, else the annotation's int/float/str, None allowed)."""
    if "type" in f.metadata:
        return f.metadata["type"]
    hint = typing.get_type_hints(cls)[f.name]
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
    if len(kinds) != 1:
        raise TypeError(f"{cls.__name__}.{f.name}: give a `type` in its metadata to parse {hint} from text")
    kind = typing.get_origin(kinds[0]) or kinds[0]
    return kind if kind in (bool, dict, list, int, float, str) else str


def _shown(default) -> str:
    """` (default X)` for a help text; nothing for None, False or an empty collection."""
    if default is None or default is False or default in ({}, []):
        return ""
    if isinstance(default, list):
        return f" (default {','.join(map(str, default))})"
    return f" (default {default:g})" if isinstance(default, int | float) else f" (default {default})"


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def field_argument(cls: type, f: dataclasses.Field) -> dict:
    """argparse's keywords for field `f` of `cls` (default None: a flag not given leaves the config's value)."""
    kind = _value_type(cls, f)
    kwargs = {"help": f.metadata.get("help", "") + _shown(_default(f)), "default": None}
    if kind is bool:
        return {**kwargs, "action": "store_true"}
    if kind is dict:
        return {**kwargs, "action": "append", "metavar": f.metadata.get("metavar", "KEY=VALUE")}
    parse = split_list if kind is list else kind
    return {**kwargs, "type": parse, "metavar": f.metadata.get("metavar"), "choices": f.metadata.get("choices")}


def method_flags(methods: Iterable[Method]) -> dict[str, tuple[type, dataclasses.Field, list[str]]]:
    """Every flag of the methods' options: flag -> (config class, field, the names of the methods that take it)."""
    flags: dict[str, tuple[type, dataclasses.Field, list[str]]] = {}
    for method in methods:
        for name in option_names(method.config_cls):
            f = method.config_cls.__dataclass_fields__[name]
            flags.setdefault(option_flag(f), (method.config_cls, f, []))[2].append(method.name)
    return flags


def add_option_args(p: argparse.ArgumentParser, methods: Iterable[Method]) -> None:
    """One flag per field of the methods' option dataclasses: type, default, help, choices and placeholder from
    the field. A flag several methods take comes once, in a group naming them; a field whose flag the command
    has already (--data, --seq-len, --batch-size, --seed, --score-option) is set by that flag."""
    taken = set(p._option_string_actions)
    groups: dict[tuple[str, ...], argparse._ArgumentGroup] = {}
    for flag, (cls, f, owners) in method_flags(methods).items():
        if flag in taken:
            continue
        taken.add(flag)
        key = tuple(owners)
        if key not in groups:
            groups[key] = p.add_argument_group(f"options of --method {', '.join(key)}")
        groups[key].add_argument(flag, **field_argument(cls, f))


def option_values(args: argparse.Namespace, config_cls: type | None) -> dict:
    """The fields of `config_cls` that the command line set (flags not given are left out)."""
    values = {}
    for name in option_names(config_cls):
        f = config_cls.__dataclass_fields__[name]
        flag = option_flag(f)
        value = getattr(args, _dest(flag), None)
        if value is None or value == []:
            continue
        kind = _value_type(config_cls, f)
        values[name] = key_values(value, flag) if kind is dict else list(value) if kind is list else value
    return values


def flag_given(args: argparse.Namespace, flag: str) -> bool:
    return getattr(args, _dest(flag), None) not in (None, [])


def _loop_flags() -> dict[str, tuple[str, type, str]]:
    """flag -> (LoopConfig field, its type, its help) of the loop options with one value (`lorashear recover`'s)."""
    return {option_flag(f): (f.name, _value_type(LoopConfig, f), f.metadata["help"])
            for f in dataclasses.fields(LoopConfig) if _value_type(LoopConfig, f) in (int, float, str)}


TRAINING_FLAGS = _loop_flags()


def add_knowledge_args(p: argparse.ArgumentParser, default_rule: str | None) -> None:
    g = p.add_argument_group("knowledge-distribution analysis (which layers' clusters must not be pruned)")
    g.add_argument("--unprunable", choices=["auto", "none", "fixed"], default=default_rule,
                   help="auto: clusters whose pruning moves the held-out loss far more than the others' (data-driven); "
                        "fixed: first 10%% of layers and the last (LLM-Pruner/LoRAPrune); none: no analysis "
                        f"(default: {default_rule or 'the method default: auto, none for random'})")
    g.add_argument("--unprunable-ratio", type=float, default=None, metavar="γ",
                   help="instead of the auto rule, keep the γ fraction of clusters with the largest deviation")
    g.add_argument("--knowledge-ratios", type=split_list, default=("0.25", "0.5"), metavar="LIST",
                   help="fractions of a cluster's groups zeroed when probing it (default 0.25,0.5)")
    g.add_argument("--knowledge-samples", type=int, default=8, metavar="N",
                   help="held-out calibration sequences the probe's loss is measured on (default 8)")


def add_score_option_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--score-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the criterion (e.g. variant=vector for taylor, reduce=mean, normalize=l2); repeatable")


def calibration_config(args: argparse.Namespace):
    return CalibrationConfig(data=args.data, samples=args.calib_samples, seq_len=args.seq_len,
                             held_out=args.knowledge_samples)


def knowledge_config(args: argparse.Namespace, criterion: str | None, default_rule: str = "auto"):
    """The KnowledgeConfig the flags ask for (`default_rule` where no rule is named: the method's)."""
    try:
        ratios = tuple(float(r) for r in args.knowledge_ratios)
    except ValueError as err:
        raise LorashearError(f"--knowledge-ratios takes numbers, got {','.join(args.knowledge_ratios)}") from err
    if args.unprunable_ratio is not None and args.unprunable not in (None, "auto"):
        raise LorashearError(f"--unprunable-ratio sets the rule itself; drop --unprunable {args.unprunable}")
    rule = "ratio" if args.unprunable_ratio is not None else (args.unprunable or default_rule)
    return KnowledgeConfig(rule=rule, unprunable_ratio=args.unprunable_ratio, ratios=ratios,
                           criterion=criterion or "wanda-sp")


def score_options(items: list[str]) -> dict[str, str]:
    return key_values(items, "--score-option")


def key_values(items: list[str], flag: str) -> dict[str, str]:
    """A repeatable flag's KEY=VALUE items as a mapping."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LorashearError(f"{flag} takes KEY=VALUE, got {item!r}")
        options[key.strip()] = value.strip()
    return options
