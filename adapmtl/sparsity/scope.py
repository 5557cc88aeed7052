"""`PruneScope`: which weights of a model are pruned and how they group into components.

One value carries the four choices that `sparsify`, `sparsity_report`, the mask baselines
(`adapmtl.methods.masks.MaskSet`) and the sensitivity sweep must all make alike: the
components, the layers kept dense (`exclude`), whether embeddings are pruned, and which bare
Parameters are (`parameters`). A run records it in its model spec, so every later verb
(eval, report, export, compile, bench) sees the same weights as training did.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from torch import nn

from adapmtl.errors import ComponentError
from adapmtl.sparsity.components import assign_components, prunable_weights


@dataclass(frozen=True)
class PruneScope:
    """What is prunable, and the components (see `adapmtl.sparsity.components`).

    components: {component: module-name prefix, glob, or a list of them}; None infers
        {"backbone": "backbone", task: "heads.<task>"} from `model.backbone` and `model.heads`.
    exclude: module-name prefixes or globs of weights kept dense.
    embeddings: also prune nn.Embedding weights.
    parameters: names or globs of bare Parameters (2-D+) to prune too (`prunable_weights`).
    """

    components: Optional[Mapping[str, tuple[str, ...]]] = None
    exclude: tuple[str, ...] = ()
    embeddings: bool = False
    parameters: tuple[str, ...] = ()

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments `sparsify`, `sparsity_report` and `assign_components` take."""
        components = None if self.components is None else {c: list(p) for c, p in self.components.items()}
        return {"components": components, "exclude": list(self.exclude), "embeddings": self.embeddings,
                "parameters": list(self.parameters)}

    def weights(self, model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
        """{name: (module, attribute)} of the weights pruned (`prunable_weights`). Raises ComponentError
        for a pattern that matches nothing, or when nothing is left to prune."""
        return prunable_weights(model, self.exclude, embeddings=self.embeddings, parameters=self.parameters)

    def component_of(self, model: nn.Module, fallback: Optional[str] = "model") -> dict[str, str]:
        """{weight name: component} (`assign_components`; with no components given and none inferable,
        every weight in `fallback`). Raises ComponentError as `assign_components` does."""
        arguments = self.arguments()
        return assign_components(model, arguments.pop("components"), fallback=fallback, attention=True, **arguments)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what `from_dict` reads)."""
        return self.arguments()

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]], where: str = "prune scope") -> "PruneScope":
        """Parse `to_dict`'s output (None or {}: the default scope). Raises ComponentError naming
        `where` for a value of the wrong type."""
        data = data or {}
        try:
            components = data.get("components")
            if components is not None:
                components = {str(c): (p,) if isinstance(p, str) else tuple(str(q) for q in p)
                              for c, p in dict(components).items()}
            return cls(components=components, exclude=_strings(data.get("exclude", ())),
                       embeddings=bool(data.get("embeddings", False)),
                       parameters=_strings(data.get("parameters", ())))
        except (TypeError, ValueError, AttributeError) as error:
            raise ComponentError(f"{where}: not a valid prune scope ({error!r}); expected components "
                                 "{name: pattern or [patterns]} or null, exclude [patterns], embeddings "
                                 "true/false, parameters [patterns]") from None


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    items = tuple(value)
    if not all(isinstance(item, str) for item in items):
        raise TypeError(f"expected strings, got {value!r}")
    return items
