"""Run configuration: YAML validated into typed objects, with `key=value` overrides.

Every field has the paper's default where the paper has one (NYU-v2; docs/method.md §5).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Sequence, Union

import torch
import yaml
from pydantic import (BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, SerializeAsAny, ValidationError,
                      field_validator, model_validator)

from adapmtl.conventions import Convention
from adapmtl.data import DATASETS
from adapmtl.errors import AdapMTLError
from adapmtl.methods import METHODS, MethodError, MethodOptions, method_options, option_keys
from adapmtl.models.errors import ModelError
from adapmtl.models.factory import is_factory, load_factory
from adapmtl.models.registry import BACKBONES
from adapmtl.tasks import METRIC_SETS
from adapmtl.weighting import WEIGHTINGS


class ConfigError(AdapMTLError, ValueError):
    """A configuration file or override is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


Size = tuple[PositiveInt, PositiveInt]
"""(height, width) in pixels."""


class DataConfig(_Section):
    dataset: str = Field("synthetic", description="a registered dataset (adapmtl.data.available_datasets())")
    root: Optional[str] = Field(None, description="dataset folder (nyuv2, taskonomy)")
    format: Literal["auto", "adashare", "mtan"] = "auto"
    buildings: Optional[str] = Field("tiny", description="taskonomy: 'tiny' or a split file")
    missing: Literal["error", "skip"] = "error"
    tasks: Optional[list[str]] = Field(None, description="default: the dataset's tasks")
    metrics: Optional[str] = Field(None, description="metric set (adapmtl.tasks.METRIC_SETS); default: the dataset's")
    miou_over: Optional[Literal["present", "all", "with_tp"]] = Field(
        None, description="classes mIoU averages over: present (in targets or predictions), all, or with_tp (with a "
        "true positive: the original code's); default: the convention's (paper: with_tp, corrected: present)")
    normalize: Literal["imagenet", "bgr_mean", "unit"] = "imagenet"
    crop: Optional[Size] = Field((321, 321), description="train crop (h, w); null: no crop")
    scale: Optional[tuple[PositiveFloat, PositiveFloat]] = Field((0.5, 1.5), description="random scale range; null: none")
    flip: bool = True
    resize_to: Optional[PositiveInt] = None
    eval_size: Optional[Size] = Field(None, description="eval resize (h, w); null: full resolution")
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(8, ge=1)
    workers: int = Field(0, ge=0)
    synthetic_size: Size = (96, 128)
    synthetic_train: int = Field(800, ge=1)
    synthetic_val: int = Field(100, ge=1)
    synthetic_test: int = Field(200, ge=1)
    cache: bool = Field(True, description="synthetic: render each scene once and keep it in memory")
    seed: Optional[int] = Field(
        None, ge=0, description="seeds the data itself: the synthetic scenes, the carved NYU-v2 val split; "
        "null: the run's seed. Batch order and augmentation always follow the run's seed, so runs of several "
        "seeds can share one data set")

    @field_validator("scale")
    @classmethod
    def _ordered(cls, scale: tuple[float, float] | None) -> tuple[float, float] | None:
        if scale is not None and scale[0] > scale[1]:
            raise ValueError(f"expected (low, high) with low <= high, got {scale}")
        return scale


BUILT_IN_KNOBS = ("width", "head_channels", "dropout", "upsample", "aspp_rates")
"""The `model:` keys that shape the registered models; a factory takes `options` instead."""


class ModelConfig(_Section):
    name: str = Field("deeplab_resnet34", description="a registered model (adapmtl.models.available_models()) "
                      "or your own factory 'package.module:function', called as function(tasks={task: channels}, "
                      "**options) (adapmtl.models.factory)")
    options: dict[str, Any] = Field(default_factory=dict, description="a factory's keyword options")
    components: Optional[dict[str, Union[str, list[str]]]] = Field(
        None, description="{component: module-name prefix or glob, or a list}; null: inferred from the model's "
        "`backbone` and `heads` (adapmtl.sparsify)")
    exclude: list[str] = Field(default_factory=list, description="module-name prefixes or globs of weights kept dense")
    embeddings: bool = Field(False, description="also prune nn.Embedding weights")
    parameters: list[str] = Field(default_factory=list, description="names or globs of other Parameters (2-D+) "
                                  "to prune, e.g. a weight used through F.linear")
    width: float = Field(1.0, gt=0)
    head_channels: int = Field(1024, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    upsample: bool = True
    aspp_rates: tuple[PositiveInt, PositiveInt, PositiveInt, PositiveInt] = Field(
        (6, 12, 18, 24), description="dilations of each ASPP head's four branches, in pixels of the backbone's "
        "output (the paper's by default); rates at or beyond its side leave the outer taps without gradient")


def _check_device(name: str) -> str:
    """'auto' or a device string torch understands (availability is checked when a run starts)."""
    if name == "auto":
        return name
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"{name!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    return name


class TrainConfig(_Section):
    steps: int = Field(20_000, ge=1)
    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = Field(1e-4, ge=0)
    threshold_lr: Optional[float] = Field(None, gt=0, description="default: lr")
    threshold_lr_scale: Union[Literal["auto"], Annotated[float, Field(gt=0)]] = Field(
        "auto", description="factor on the thresholds' learning rate; auto: max(1, 7.75 / Σ_t lr(t) of this run) "
        "when threshold_lr is unset (every run gets the threshold budget of the paper's 20,000-step recipe, and "
        "exactly that recipe at 20,000 steps; adapmtl.sparsity.budget), else 1")
    threshold_weight_decay: Optional[float] = Field(None, ge=0, description="default: weight_decay")
    lr_step: int = Field(4000, ge=1)
    lr_gamma: float = Field(0.5, gt=0, le=1)
    accumulate: int = Field(1, ge=1, description="micro-batches per step (batch_size must divide)")
    log_every: int = Field(50, ge=1)
    val_every: int = Field(1000, ge=1)
    checkpoint_every: int = Field(1000, ge=1)
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    init_from: Optional[str] = Field(None, description="a dense checkpoint to start from")
    progress: bool = True
    dist_timeout: float = Field(600.0, gt=0, description="seconds a rank waits for the others before the run "
                                "stops with an error naming the stuck rank (see engine.distributed.setup)")

    _device = field_validator("device")(_check_device)




class Config(_Section):
    name: Optional[str] = Field(None, description="run name; default: from the config file and method")
    convention: Convention = Field(
        "corrected", description="paper: compute as the original code does (normals on raw colour vectors, "
        "losses at the heads' resolution, mIoU over classes with a true positive, weights including the current "
        "batch, black padding, no normal-x flip), for numbers comparable with the paper's tables; corrected: our "
        "fixes (docs/conventions.md)")
    seed: int = 0
    out_dir: str = "runs"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    method: SerializeAsAny[MethodOptions] = Field(default_factory=lambda: method_options({}))
    train: TrainConfig = TrainConfig()

    @field_validator("method", mode="before")
    @classmethod
    def _method_options(cls, raw: Any) -> MethodOptions:
        # The chosen method's own options class validates the section (see adapmtl.methods).
        try:
            return method_options(raw)
        except MethodError as error:
            raise ValueError(f"`method.name`: {error}") from None

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        registered = [("data.dataset", DATASETS, self.data.dataset), ("method.weighting", WEIGHTINGS, self.method.weighting)]
        if is_factory(self.model.name):
            _check_factory(self.model)
        elif self.model.name not in BACKBONES and "." in self.model.name:
            raise ValueError(f"`model.name`: {self.model.name!r} is not a registered model "
                             f"({', '.join(BACKBONES.names())}); your own factory is named 'package.module:function', "
                             f"e.g. {self.model.name.rsplit('.', 1)[0]}:{self.model.name.rsplit('.', 1)[1]}")
        else:
            registered.append(("model.name", BACKBONES, self.model.name))
            if self.model.options:
                raise ValueError(f"`model.options` is for a factory model ('package.module:function'); the "
                                 f"registered model {self.model.name!r} takes {', '.join(BUILT_IN_KNOBS)}")
        for key, registry, name in registered:
            try:
                if name is not None:
                    registry.get_entry(name)
            except AdapMTLError as error:
                raise ValueError(f"`{key}`: {error}") from None
        if self.data.metrics is not None and self.data.metrics not in METRIC_SETS:
            raise ValueError(f"`data.metrics`: unknown metric set {self.data.metrics!r}; expected one of "
                             f"{', '.join(sorted(METRIC_SETS))}")
        weighting = self.method.weighting or METHODS[self.method.name].default_weighting
        foreign = sorted(set(self.method.weighting_options) - set(WEIGHTINGS[weighting].options))
        if foreign:
            allowed = ", ".join(WEIGHTINGS[weighting].options) or "none"
            raise ValueError(f"`method.weighting_options`: the {weighting!r} weighting takes no option {foreign}; "
                             f"its options: {allowed}")
        if self.data.batch_size % self.train.accumulate:
            raise ValueError(
                f"data.batch_size ({self.data.batch_size}) must be a multiple of train.accumulate ({self.train.accumulate})"
            )
        return self


def _check_factory(model: ModelConfig) -> None:
    """A factory must be importable now (not after the first write) and take none of the built-in knobs."""
    try:
        load_factory(model.name)
    except ModelError as error:
        raise ValueError(f"`model.name`: {error}") from None
    # config.yaml records every field, defaults included: only a value other than the default is a mistake
    knobs = [k for k in BUILT_IN_KNOBS if getattr(model, k) != ModelConfig.model_fields[k].default]
    if knobs:
        raise ValueError(f"`model.{knobs[0]}` shapes the registered models; the factory {model.name!r} takes its "
                         "options in `model.options`, e.g. model.options.width=0.5")


def _section_keys(location: tuple, model: type[BaseModel], raw: dict[str, Any]) -> list[str]:
    """The keys allowed in the section at `location` (the method section: the chosen method's)."""
    if location == ("method",):
        name = (raw.get("method") or {}).get("name", MethodOptions.model_fields["name"].default)
        return option_keys(name)
    section: Any = model
    for part in location:
        section = section.model_fields[part].annotation
    return list(section.model_fields)


def _describe(error: dict[str, Any], model: type[BaseModel], raw: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_section_keys(error["loc"][:-1], model, raw))
        return f"unknown key `{location}`; allowed here: {allowed}"
    if error["type"] == "value_error":  # our own checks: the message says it all
        message = error["msg"].removeprefix("Value error, ")
        return f"`{location}`: {message}" if location and not message.startswith("`") else message
    return f"`{location}`: {error['msg']} (got {error.get('input')!r})"


def validate_config(raw: dict[str, Any], source: str = "config") -> Config:
    """A Config from a plain dict. Raises ConfigError listing every invalid key (its name, what was
    wrong, and what is allowed), including method options the chosen method does not take."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (data, model, method, train), got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(_describe(e, Config, raw) for e in error.errors())
        raise ConfigError(f"{problems} (in {source})") from None


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings (values parsed as YAML) to a raw config dict, in place.

    Raises ConfigError for an override that is not key=value, whose value is not valid YAML,
    or whose path runs through a key that is not a section."""
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r} is not of the form key=value (e.g. train.steps=500)")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {override!r}: `{part}` is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"override {override!r}: the value is not valid YAML ({error.problem or error}); "
                              "quote lists and strings as in the config file, e.g. train.betas=[0.9,0.999]") from None
    return raw


PRESETS = Path(__file__).resolve().parents[1] / "configs"


def preset_names() -> list[str]:
    """The configs shipped with adapmtl (usable by name, e.g. `--config quickstart`)."""
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def read_yaml(path: str | Path) -> tuple[Path, Any]:
    """Resolve `path` (a file, or a preset name) and parse it: (the file, its YAML content).

    Raises ConfigError if neither the file nor a preset of that name exists, or it is not valid YAML."""
    path = Path(path)
    if not path.is_file() and (PRESETS / f"{path}.yaml").is_file():
        path = PRESETS / f"{path}.yaml"
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; presets: {', '.join(preset_names())}")
    try:
        return path, yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {getattr(error, 'problem', None) or error}") from None


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (a path, or a preset name; None: all defaults), apply overrides, validate.

    Raises ConfigError (see `read_yaml`, `apply_overrides`, `validate_config`)."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path, raw = read_yaml(path)
        source = str(path)
    raw = apply_overrides(raw, overrides)
    config = validate_config(raw, source if not overrides else f"{source} and the overrides")
    if config.name is None and path is not None:
        config.name = f"{Path(path).stem}_{config.method.name}"
    return config
