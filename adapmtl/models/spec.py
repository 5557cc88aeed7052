"""`ModelSpec`: everything needed to rebuild a model and to prune it as its run did, in one place.

The engine builds a run's model from it, the run folder's model file records it in its
metadata, and every export file carries it, so a model is rebuilt the same way everywhere:
a registered model (`create_model`) or the user's own factory (`adapmtl.models.factory`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from torch import nn

from adapmtl.errors import ComponentError
from adapmtl.models.aspp import RATES
from adapmtl.models.errors import ModelError
from adapmtl.models.factory import build_from_factory, is_factory
from adapmtl.models.registry import create_model
from adapmtl.sparsity.scope import PruneScope


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model and what of it is pruned.

    `name`: a registered model (the arguments of `create_model(name, tasks, width=, head_channels=,
    dropout=, upsample=, aspp_rates=)`; defaults are the paper's architecture) or a factory
    "package.module:function", called as `function(tasks=tasks, **options)`.
    `tasks`: {task: output channels}, in head order. `options`: a factory's keyword options (JSON
    values; empty for a registered model). `scope`: the weights pruned and their components.
    """

    name: str
    tasks: dict[str, int]
    width: float = 1.0
    head_channels: int = 1024
    dropout: float = 0.5
    upsample: bool = True
    aspp_rates: tuple[int, int, int, int] = RATES
    options: Mapping[str, Any] = field(default_factory=dict)
    scope: PruneScope = PruneScope()

    @classmethod
    def from_options(cls, options: Any, tasks: Mapping[str, int]) -> "ModelSpec":
        """The spec of a run config's `model:` section (`adapmtl.engine.config.ModelConfig`) with the
        dataset's `tasks`."""
        scope = PruneScope.from_dict({"components": options.components, "exclude": options.exclude,
                                      "embeddings": options.embeddings, "parameters": options.parameters})
        return cls(options.name, dict(tasks), options.width, options.head_channels, options.dropout,
                   options.upsample, tuple(options.aspp_rates), dict(options.options), scope)

    def build(self) -> nn.Module:
        """A freshly initialised model of this architecture (load a state dict into it).

        Raises ModelError for an unknown name or invalid options (see `create_model`), a factory
        that cannot be imported or fails (see `adapmtl.models.factory.build_from_factory`), or
        options given to a registered model."""
        if is_factory(self.name):
            return build_from_factory(self.name, self.tasks, self.options)
        if self.options:
            raise ModelError(f"model {self.name!r} is a registered model: it takes width, head_channels, dropout, "
                             f"upsample and aspp_rates, not options {dict(self.options)} (those are for a factory "
                             "'package.module:function')")
        return create_model(self.name, dict(self.tasks), width=self.width, head_channels=self.head_channels,
                            dropout=self.dropout, upsample=self.upsample, aspp_rates=self.aspp_rates)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain dict (what `from_dict` reads), JSON-ready. A factory's spec holds its
        name, tasks, options and scope only: the registered models' knobs mean nothing to it."""
        common = {"name": self.name, "tasks": dict(self.tasks), "options": dict(self.options),
                  "scope": self.scope.to_dict()}
        if is_factory(self.name):
            return common
        return {**common, "width": self.width, "head_channels": self.head_channels, "dropout": self.dropout,
                "upsample": self.upsample, "aspp_rates": list(self.aspp_rates)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "model spec") -> "ModelSpec":
        """Parse a spec written by `to_dict`; `where` names the file in errors. Keys added later
        have the values of the files written before them: aspp_rates the paper's rates, options
        none, scope the default (every Conv/Linear/attention weight, inferred components).

        Raises ModelError when a key is missing or has the wrong type."""
        try:
            knobs = {} if is_factory(str(data["name"])) else {
                "width": float(data["width"]), "head_channels": int(data["head_channels"]),
                "dropout": float(data["dropout"]), "upsample": bool(data["upsample"]),
                "aspp_rates": tuple(int(r) for r in data.get("aspp_rates", RATES))}
            return cls(name=str(data["name"]), tasks={str(t): int(c) for t, c in data["tasks"].items()}, **knobs,
                       options=dict(data.get("options") or {}),
                       scope=PruneScope.from_dict(data.get("scope"), where))
        except ComponentError as error:
            raise ModelError(str(error)) from None
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ModelError(f"{where}: not a valid model spec ({error!r}); expected the keys name, tasks "
                             f"{{task: channels}}, width, head_channels, dropout, upsample, and optionally "
                             f"aspp_rates [four ints]") from None
