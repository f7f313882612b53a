"""A pipeline recipe: one YAML file mapped onto the stages' own config dataclasses.

    model: smollm2-135m
    dtype: auto                                    # every stage's weights: auto (bf16 on a CUDA GPU that
                                                   # supports it, else fp32), float32, bfloat16, float16
    calibration: {samples: 16}                     # CalibrationConfig (knowledge analysis and prune)
    analyze: {kinds: all}                          # the graph summary; null switches a stage off
    knowledge: {rule: auto}                        # KnowledgeConfig (criterion: the method's); or
                                                   # {from: OUT/02-knowledge/knowledge.json}: that verdict
    prune: {method: taylor, ratio: 0.2}            # PruneConfig, and the method's options (its config's fields)
    recover: {tokens: 20000}                       # RecoverConfig (pruned, out, dense, resume: set by the runner)
    evaluate: {ppl_windows: 8, tasks: [piqa]}      # EvalConfig, plus speed_rounds (no limit: 200 on a CPU)

Every section is checked when the recipe is loaded (unknown keys name the known ones), so a bad
recipe fails before any model work. `key.sub=value` overrides are applied first. The recipes under
`lorashear/recipes/` ship with the package (the repository's `recipes/` is that folder): `load_recipe("demo")`
reads the packaged demo.yaml from any installation.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lorashear.errors import LorashearError
from lorashear.evaluate import EvalConfig, default_limit
from lorashear.importance.calibration import CalibrationConfig
from lorashear.knowledge import KnowledgeConfig
from lorashear.models import default_device, resolve_dtype
from lorashear.prune.api import PruneConfig
from lorashear.prune.methods import get_method
from lorashear.recover.config import RecoverConfig
from lorashear.train.config import RESUMABLE_CHANGES, load_yaml, read_recipe

if TYPE_CHECKING:
    from lorashear.prune.methods import Method

# Sections in pipeline order; None switches a stage off. `model` is the only required key; `model` and
# `dtype` are plain values, the others mappings of a stage's options.
SECTIONS = ("model", "dtype", "calibration", "analyze", "knowledge", "prune", "recover", "evaluate")
VALUES = ("model", "dtype")
OPTIONAL_STAGES = ("analyze", "knowledge", "recover", "evaluate")
ANALYZE_KEYS = {"kinds": "all", "lora": False}
EVAL_EXTRA = {"speed_rounds": 5}  # rounds of the side-by-side timing (evaluate.compare)
KNOWLEDGE_FROM = "from"  # knowledge.from: an earlier analysis's knowledge.json, used instead of probing
# Set by the runner, never by a recipe: where a stage reads and writes.
RUNNER_KEYS = {"prune": ("model", "output", "overwrite", "calibration", "knowledge", "knowledge_from", "dtype",
                         "options"),
               "recover": ("pruned", "out", "resume", "dtype")}


PRUNE_FIELDS = {f.name: f for f in dataclasses.fields(PruneConfig)}


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def check_keys(section: str, values: dict, known: list[str]) -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise LorashearError(f"unknown key(s) in '{section}': {', '.join(unknown)}; known: {', '.join(sorted(known))}")


@dataclass
class Recipe:
    """The resolved recipe: the raw sections (as written back to OUT/recipe.yaml) and the configs they make."""

    sections: dict[str, Any]

    @property
    def model(self) -> str:
        return self.sections["model"]

    @property
    def dtype(self) -> str:
        """Every stage's weights (`lorashear.models.DTYPES`); the stages resolve it on their device."""
        return self.sections.get("dtype") or "auto"

    def enabled(self, section: str) -> bool:
        return self.sections.get(section) is not None

    def calibration(self) -> CalibrationConfig:
        return CalibrationConfig(**_with_lists(self.sections.get("calibration") or {}))

    def method(self) -> Method:
        """The registered pruning method of the `prune` section (`prune.methods.Method`)."""
        return get_method(self.prune_setting("method"))

    def prune_setting(self, name: str) -> Any:
        """A `PruneConfig` field as the `prune` section sets it, else its default."""
        default = PRUNE_FIELDS[name]
        if default.default_factory is not dataclasses.MISSING:
            return self.sections["prune"].get(name, default.default_factory())
        return self.sections["prune"].get(name, default.default)

    def knowledge(self) -> KnowledgeConfig:
        """The analysis the recipe asks for: without a `knowledge` section the method's default rule,
        `knowledge: null` none; the probe criterion is the method's unless the section names one."""
        if self.sections.get("knowledge", {}) is None:
            return KnowledgeConfig(rule="none")
        method = self.method()
        if "knowledge" not in self.sections:
            return KnowledgeConfig(rule=method.knowledge, criterion=method.probe_criterion)
        values = {k: v for k, v in self.sections["knowledge"].items() if k != KNOWLEDGE_FROM}
        return KnowledgeConfig(**{"criterion": method.probe_criterion, **_with_lists(values)})

    def knowledge_from(self) -> str | None:
        """`knowledge.from`: an earlier analysis's knowledge.json whose verdict the run takes (nothing probed)."""
        values = self.sections.get("knowledge") or {}
        path = values.get(KNOWLEDGE_FROM)
        if path is not None and (set(values) - {KNOWLEDGE_FROM}):
            raise LorashearError(f"'knowledge' takes either 'from' or the rule keys, not both: "
                                 f"{', '.join(sorted(set(values) - {KNOWLEDGE_FROM}))}")
        return None if path is None else str(path)

    def prune(self, output: str | Path, knowledge_from: str | Path | None = None) -> PruneConfig:
        """PruneConfig of the `prune` section: its own keys, and the method's options (`Method.config_cls`'s
        fields; a trained method's `seed` and `batch_size` are the scoring's and its run's)."""
        own = [name for name in PRUNE_FIELDS if name not in RUNNER_KEYS["prune"]]
        values, options = self.method().split(self.sections["prune"], own, "in 'prune'")
        return PruneConfig(model=self.model, output=str(output), dtype=self.dtype, calibration=self.calibration(),
                           knowledge=self.knowledge(), knowledge_from=None if knowledge_from is None else str(knowledge_from),
                           options=options, **_with_lists(values))

    def recover(self, pruned: str | Path, out: str | Path, resume: bool) -> RecoverConfig:
        values = {"dense": self.model, **self.sections["recover"]}
        config = RecoverConfig.from_dict({**values, "pruned": str(pruned), "out": str(out), "resume": resume,
                                          "dtype": self.dtype})
        config.validate()
        return config

    def evaluate(self) -> tuple[EvalConfig, int]:
        """The evaluation settings and the rounds of the side-by-side speed timing."""
        values = dict(self.sections["evaluate"])
        rounds = values.pop("speed_rounds", EVAL_EXTRA["speed_rounds"])
        if "limit" not in values:  # as `lorashear eval`: every document on a GPU, the first 200 on a CPU
            values["limit"] = default_limit(default_device().type)
        return EvalConfig(**_with_lists(values)), rounds

    def analyze(self) -> dict:
        return {**ANALYZE_KEYS, **self.sections["analyze"]}

    def check(self) -> None:
        """Build every enabled stage's config once, so a bad recipe fails before any model work."""
        resolve_dtype(self.dtype)
        if self.enabled("analyze"):
            check_keys("analyze", self.sections["analyze"], list(ANALYZE_KEYS))
        check_keys("calibration", self.sections.get("calibration") or {}, field_names(CalibrationConfig))
        check_keys("knowledge", self.sections.get("knowledge") or {}, [*field_names(KnowledgeConfig), KNOWLEDGE_FROM])
        self.knowledge_from()
        self.prune("recipe-check")
        if self.enabled("recover"):
            own = [k for k in field_names(RecoverConfig) if k not in RUNNER_KEYS["recover"]]
            check_keys("recover", self.sections["recover"], own)
            self.recover("pruned", "out", resume=False)
        if self.enabled("evaluate"):
            check_keys("evaluate", self.sections["evaluate"], field_names(EvalConfig) + list(EVAL_EXTRA))
            self.evaluate()

    def same_run(self) -> dict:
        """The sections a resumed run must share with the interrupted one (a training stage's
        stop/checkpoint options may change, as for `lorashear recover --resume`)."""
        sections = copy.deepcopy(self.sections)
        for name in ("prune", "recover"):  # the training stages (a trained method's options sit in `prune`)
            if isinstance(sections.get(name), dict):
                sections[name] = {k: v for k, v in sections[name].items() if k not in RESUMABLE_CHANGES}
        return sections

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.sections, sort_keys=False)


def _with_lists(values: dict) -> dict:
    """YAML lists where the dataclasses take tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def parse_override(text: str) -> tuple[list[str], Any]:
    """`prune.ratio=0.5` → (["prune", "ratio"], 0.5); the value is read as YAML (numbers, lists, null)."""
    key, sep, value = text.partition("=")
    path = [part for part in key.strip().split(".") if part]
    if not sep or not path:
        raise LorashearError(f"an override is KEY.SUB=VALUE (e.g. prune.ratio=0.5), got {text!r}")
    try:
        return path, load_yaml(value)
    except yaml.YAMLError as err:
        raise LorashearError(f"override {text!r}: the value is not valid YAML ({err})") from err


def apply_overrides(sections: dict, overrides: list[str]) -> dict:
    """The sections with every `a.b=value` override set (a switched-off section comes back on)."""
    sections = copy.deepcopy(sections)
    for text in overrides:
        path, value = parse_override(text)
        if path[0] not in SECTIONS:
            raise LorashearError(f"override {text!r}: unknown section '{path[0]}'; known: {', '.join(SECTIONS)}")
        node = sections
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return sections


PACKAGED = Path(__file__).resolve().parents[1] / "recipes"  # the recipes shipped with the package


def packaged_recipes() -> list[str]:
    """Names of the recipes shipped with the package (`lorashear run NAME`)."""
    return sorted(path.stem for path in PACKAGED.glob("*.yaml"))


def recipe_path(spec: str | Path) -> Path:
    """A recipe file: `spec` itself when it exists, else the packaged recipe named `spec` (with or without
    .yaml); one clear error naming the packaged ones otherwise."""
    path = Path(spec)
    if path.is_file():
        return path
    packaged = PACKAGED / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if path.parent == Path(".") and packaged.is_file():
        return packaged
    raise LorashearError(f"recipe not found: {spec} (neither a file nor a packaged recipe; packaged: "
                         f"{', '.join(packaged_recipes())})")


def load_recipe(spec: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read a recipe (a file, or the name of a packaged one), apply the overrides and check every stage's settings."""
    return recipe_from_dict(read_recipe(recipe_path(spec)), overrides)


def recipe_from_dict(raw: dict, overrides: list[str] = ()) -> Recipe:
    """A checked Recipe from sections (as in a recipe file) and `a.b=value` overrides."""
    check_keys("recipe", raw, list(SECTIONS))
    sections = apply_overrides(raw, list(overrides))
    if not isinstance(sections.get("model"), str) or not sections["model"]:
        raise LorashearError("a recipe names its model: `model: smollm2-135m` (a name, folder or .gguf)")
    if not isinstance(sections.get("prune"), dict):
        raise LorashearError("a recipe needs a `prune:` section (method, ratio, ...); it is the pipeline's core")
    for section in (s for s in SECTIONS if s not in VALUES):
        if section in sections and sections[section] is not None and not isinstance(sections[section], dict):
            raise LorashearError(f"section '{section}' must be a mapping of options (or null to switch it off)")
    sections.setdefault("analyze", {})
    sections.setdefault("evaluate", {})
    recipe = Recipe(sections)
    recipe.check()
    return recipe
