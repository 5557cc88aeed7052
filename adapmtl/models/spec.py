"""`ModelSpec`: everything `create_model` needs to rebuild a model, in one place.

The engine builds a run's model from it, the run folder's model file records it in its
metadata, and every export file carries it, so a model is rebuilt the same way everywhere.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from adapmtl.models.aspp import RATES
from adapmtl.models.errors import ModelError
from adapmtl.models.multitask import MultiTaskModel
from adapmtl.models.registry import create_model


@dataclass(frozen=True)
class ModelSpec:
    """The arguments of `create_model(name, tasks, width=, head_channels=, dropout=, upsample=, aspp_rates=)`.

    `tasks`: {task: output channels}, in head order. Defaults are the paper's architecture.
    """

    name: str
    tasks: dict[str, int]
    width: float = 1.0
    head_channels: int = 1024
    dropout: float = 0.5
    upsample: bool = True
    aspp_rates: tuple[int, int, int, int] = RATES

    @classmethod
    def from_options(cls, options: Any, tasks: Mapping[str, int]) -> "ModelSpec":
        """The spec of a run config's `model:` section (any object with name, width, head_channels,
        dropout, upsample and aspp_rates attributes) with the dataset's `tasks`."""
        return cls(options.name, dict(tasks), options.width, options.head_channels, options.dropout,
                   options.upsample, tuple(options.aspp_rates))

    def build(self) -> MultiTaskModel:
        """A freshly initialised model of this architecture (load a state dict into it).

        Raises ModelError for an unknown name or invalid options (see `create_model`)."""
        return create_model(self.name, dict(self.tasks), width=self.width, head_channels=self.head_channels,
                            dropout=self.dropout, upsample=self.upsample, aspp_rates=self.aspp_rates)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain dict (what `from_dict` reads); aspp_rates as a list, as JSON holds it."""
        return {**asdict(self), "aspp_rates": list(self.aspp_rates)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "model spec") -> "ModelSpec":
        """Parse a spec written by `to_dict`; `where` names the file in errors. A spec without
        aspp_rates (written before the key existed) has the paper's rates, as those models did.

        Raises ModelError when a key is missing or has the wrong type."""
        try:
            return cls(name=str(data["name"]), tasks={str(t): int(c) for t, c in data["tasks"].items()},
                       width=float(data["width"]), head_channels=int(data["head_channels"]),
                       dropout=float(data["dropout"]), upsample=bool(data["upsample"]),
                       aspp_rates=tuple(int(r) for r in data.get("aspp_rates", RATES)))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ModelError(f"{where}: not a valid model spec ({error!r}); expected the keys name, tasks "
                             f"{{task: channels}}, width, head_channels, dropout, upsample, and optionally "
                             f"aspp_rates [four ints]") from None
