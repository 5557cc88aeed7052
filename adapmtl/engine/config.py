"""Run configuration: YAML validated into typed objects, with `key=value` overrides.

Every field has the paper's default where the paper has one (NYU-v2, REFERENCE §8).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from adapmtl.errors import AdapMTLError


class ConfigError(AdapMTLError, ValueError):
    """A configuration file or override is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    dataset: Literal["synthetic", "nyuv2", "taskonomy"] = "synthetic"
    root: Optional[str] = Field(None, description="dataset folder (nyuv2, taskonomy)")
    format: Literal["auto", "adashare", "mtan"] = "auto"
    buildings: Optional[str] = Field("tiny", description="taskonomy: 'tiny' or a split file")
    missing: Literal["error", "skip"] = "error"
    tasks: Optional[list[str]] = Field(None, description="default: the dataset's tasks")
    metrics: Optional[Literal["nyuv2", "taskonomy"]] = Field(None, description="metric set; default by dataset")
    normalize: Literal["imagenet", "bgr_mean", "unit"] = "imagenet"
    crop: Optional[tuple[int, int]] = Field((321, 321), description="train crop (h, w); null: no crop")
    scale: Optional[tuple[float, float]] = Field((0.5, 1.5), description="random scale range; null: none")
    flip: bool = True
    resize_to: Optional[int] = None
    eval_size: Optional[tuple[int, int]] = Field(None, description="eval resize (h, w); null: full resolution")
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(8, ge=1)
    workers: int = Field(0, ge=0)
    synthetic_size: tuple[int, int] = (96, 128)
    synthetic_train: int = Field(800, ge=1)
    synthetic_val: int = Field(100, ge=1)
    synthetic_test: int = Field(200, ge=1)
    cache: bool = Field(True, description="synthetic: render each scene once and keep it in memory")


class ModelConfig(_Section):
    name: str = "deeplab_resnet34"
    width: float = Field(1.0, gt=0)
    head_channels: int = Field(1024, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    upsample: bool = True


class MethodConfig(_Section):
    name: str = "adapmtl"
    target: float = Field(0.9, ge=0, lt=1, description="overall sparsity to end at")
    init: float = Field(-20.0, description="initial threshold score s0")
    granularity: Literal["component", "layer", "global"] = "component"
    weighting: Optional[Literal["adaptive", "equal"]] = Field(None, description="default: the method's")
    weighting_begin: Optional[int] = Field(None, ge=0)
    weighting_window: Optional[int] = Field(None, ge=1)
    policy: Literal["exact", "freeze"] = "exact"
    reach_at: float = Field(2 / 3, gt=0, le=1)
    schedule: Literal["cubic", "linear"] = "cubic"
    interval: Optional[int] = Field(None, ge=1)
    # mask-based baselines (imp, lth, snip, gmp, disparse_*, random); see adapmtl/methods
    prune_start: float = Field(0.25, ge=0, lt=1, description="gmp, imp: first pruning, as a fraction of train.steps")
    rounds: int = Field(3, ge=1, description="imp: prune/fine-tune rounds to the target")
    pretrain: float = Field(0.5, gt=0, lt=1, description="lth: fraction of train.steps trained dense before pruning")
    rewind_step: int = Field(0, ge=0, description="lth: rewind to the weights after this step (0: initial)")
    importance_batches: int = Field(10, ge=1, description="snip, disparse_*: batches scoring importance")
    update_every: int = Field(50, ge=1, description="gmp, disparse_dynamic: steps between mask updates")
    regrow_fraction: float = Field(0.3, gt=0, lt=1, description="disparse_dynamic: initial drop/regrow fraction")


class TrainConfig(_Section):
    steps: int = Field(20_000, ge=1)
    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = Field(1e-4, ge=0)
    threshold_lr: Optional[float] = Field(None, gt=0, description="default: lr")
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


class Config(_Section):
    name: Optional[str] = Field(None, description="run name; default: from the config file and method")
    seed: int = 0
    out_dir: str = "runs"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    method: MethodConfig = MethodConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        if self.data.batch_size % self.train.accumulate:
            raise ValueError(
                f"data.batch_size ({self.data.batch_size}) must be a multiple of train.accumulate ({self.train.accumulate})"
            )
        return self


def _describe(error: dict[str, Any], model: type[BaseModel]) -> str:
    location = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        section: Any = model
        for part in error["loc"][:-1]:
            section = section.model_fields[part].annotation
        allowed = ", ".join(section.model_fields)
        return f"unknown key `{location}`; allowed here: {allowed}"
    if not location:
        return error["msg"].removeprefix("Value error, ")
    return f"`{location}`: {error['msg']} (got {error.get('input')!r})"


def validate_config(raw: dict[str, Any], source: str = "config") -> Config:
    """A Config from a plain dict, or a ConfigError listing every invalid key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (data, model, method, train), got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        problems = "\n  ".join(_describe(e, Config) for e in error.errors())
        raise ConfigError(f"{source} is invalid:\n  {problems}") from None


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings (values parsed as YAML) to a raw config dict."""
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
        node[parts[-1]] = yaml.safe_load(value)
    return raw


PRESETS = Path(__file__).resolve().parents[1] / "configs"


def preset_names() -> list[str]:
    """The configs shipped with adapmtl (usable by name, e.g. `--config quickstart`)."""
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def read_yaml(path: str | Path) -> tuple[Path, Any]:
    """Resolve `path` (a file, or a preset name) and parse it: (the file, its YAML content)."""
    path = Path(path)
    if not path.is_file() and (PRESETS / f"{path}.yaml").is_file():
        path = PRESETS / f"{path}.yaml"
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; presets: {', '.join(preset_names())}")
    try:
        return path, yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (a path, or a preset name; None: all defaults), apply overrides, validate."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path, raw = read_yaml(path)
        source = str(path)
    raw = apply_overrides(raw, overrides)
    config = validate_config(raw, source if not overrides else f"{source} with overrides {list(overrides)}")
    if config.name is None and path is not None:
        config.name = f"{Path(path).stem}_{config.method.name}"
    return config


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (every field, defaults included)."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
