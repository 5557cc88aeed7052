"""Ways to execute one Conv2d or Linear layer whose weight has exact zeros.

Each path is a small nn.Module built from the original layer that computes the same
output (within float tolerance). `candidate_paths(layer)` lists those that apply;
`compile_sparse` times them on the layer's real input and keeps the fastest.

- "dense": the layer itself (oneDNN/MKL dense kernels).
- "shrunk": filters that are entirely zero are not computed (their output is the bias),
  and input channels no filter reads are dropped: unstructured zeros that happen to
  line up become a smaller dense layer.
- "csr": the weight as a CSR sparse matrix times the input: a 1×1 convolution directly,
  a k×k convolution through im2col (unfold), both by PyTorch's sparse product; a Linear layer
  by the native sparse Linear kernel where it built (`csr_linear.py`), else by PyTorch's.
- "direct": a convolution computed by the native kernel straight from the input, reading
  only what each nonzero's tap covers, padding never (`direct.py`); offered where the kernel built.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from adapmtl.inference.csr_linear import CSRLinear
from adapmtl.inference.direct import Direct
from adapmtl.inference.geometry import conv_output_size

Layer = nn.Conv2d | nn.Linear


class Shrunk(nn.Module):
    """The layer without its all-zero filters and its unread input channels."""

    def __init__(self, layer: Layer) -> None:
        super().__init__()
        weight = layer.weight.detach()
        flat = weight.flatten(2) if weight.dim() > 2 else weight.unsqueeze(-1)  # [out, in, k]
        self.out_channels = weight.shape[0]
        self.register_buffer("kept_out", flat.ne(0).any(dim=(1, 2)).nonzero().flatten())
        self.register_buffer("kept_in", flat.ne(0).any(dim=(0, 2)).nonzero().flatten())
        bias = layer.bias.detach() if layer.bias is not None else torch.zeros(self.out_channels)
        self.register_buffer("bias", bias.clone())
        small = weight[self.kept_out][:, self.kept_in].contiguous()
        self.register_buffer("weight", small)
        self.conv = isinstance(layer, nn.Conv2d)
        if self.conv:
            self.kernel_size, self.stride = layer.kernel_size, layer.stride
            self.padding, self.dilation = layer.padding, layer.dilation

    @staticmethod
    def applies(layer: Layer) -> bool:
        """Only when some filter or input channel is entirely zero (and the conv is not grouped, with zero
        padding given as numbers: its output size is computed from them)."""
        if isinstance(layer, nn.Conv2d) and (layer.groups != 1 or layer.padding_mode != "zeros"
                                             or not isinstance(layer.padding, tuple)):
            return False
        weight = layer.weight.detach()
        flat = weight.flatten(2) if weight.dim() > 2 else weight.unsqueeze(-1)
        return bool((~flat.ne(0).any(dim=(1, 2))).any() or (~flat.ne(0).any(dim=(0, 2))).any())

    @staticmethod
    def worth_timing(layer: Layer) -> bool:
        """Always, where it applies: `applies` already asks for zeros that line up."""
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The original layer's output for `x` ([B, C, H, W] or [..., in_features])."""
        if self.conv:
            shape = (x.shape[0], self.out_channels, *conv_output_size(self, *x.shape[2:]))
            out = self.bias.view(1, -1, 1, 1).expand(shape).clone()
            if self.kept_out.numel():  # an all-zero layer is its bias
                x = x.index_select(1, self.kept_in)
                out[:, self.kept_out] = F.conv2d(x, self.weight, self.bias[self.kept_out], self.stride,
                                                 self.padding, self.dilation)
            return out
        out = self.bias.expand(*x.shape[:-1], self.out_channels).clone()
        if self.kept_out.numel():
            out[..., self.kept_out] = F.linear(x.index_select(-1, self.kept_in), self.weight, self.bias[self.kept_out])
        return out


class CSR(nn.Module):
    """The weight as a CSR matrix [out, in·kh·kw] times the (unfolded) input; a Linear layer
    through `CSRLinear` (the native kernel where it built)."""

    def __init__(self, layer: Layer) -> None:
        super().__init__()
        self.conv = isinstance(layer, nn.Conv2d)
        if not self.conv:
            self.linear = CSRLinear(layer)
            return
        weight = layer.weight.detach()
        with warnings.catch_warnings():  # PyTorch flags CSR as beta on every conversion
            warnings.simplefilter("ignore", UserWarning)
            csr = weight.reshape(weight.shape[0], -1).to_sparse_csr()
        # the CSR arrays are buffers, the matrix is made from them per call: a CSR tensor held as an
        # attribute stayed out of state_dict(), so load_state_dict left its old weights (silently)
        self.register_buffer("crow_indices", csr.crow_indices())
        self.register_buffer("col_indices", csr.col_indices())
        self.register_buffer("values", csr.values())
        self.matrix_size = tuple(csr.shape)
        bias = layer.bias.detach().clone() if layer.bias is not None else None
        self.register_buffer("bias", bias)
        self.kernel_size, self.stride = layer.kernel_size, layer.stride
        self.padding, self.dilation = layer.padding, layer.dilation
        self.pointwise = layer.kernel_size == (1, 1) and layer.stride == (1, 1) and layer.padding == (0, 0)

    @staticmethod
    def applies(layer: Layer) -> bool:
        """Linear layers, and ungrouped Conv2d with zero padding given as numbers."""
        if isinstance(layer, nn.Conv2d):
            return layer.groups == 1 and layer.padding_mode == "zeros" and isinstance(layer.padding, tuple)
        return True

    @staticmethod
    def worth_timing(layer: Layer) -> bool:
        """Only for a weight with zeros: a dense weight as CSR is never faster."""
        return bool(layer.weight.detach().eq(0).any())

    def _matrix(self) -> torch.Tensor:
        """The weight [out, in·kh·kw] as a CSR tensor over the current buffers (no copy)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow_indices, self.col_indices, self.values, self.matrix_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The original layer's output for `x` ([B, C, H, W] or [..., in_features])."""
        if not self.conv:
            return self.linear(x)
        batch, _, height, width = x.shape
        if batch == 0 or height == 0 or width == 0:  # nothing to multiply (the products below cannot reshape 0)
            out_h, out_w = conv_output_size(self, height, width)
            return x.new_empty(batch, self.matrix_size[0], max(out_h, 0), max(out_w, 0))
        if self.pointwise:
            columns = x.reshape(batch, x.shape[1], -1)  # [B, C, H·W]
            out_h, out_w = height, width
        else:
            columns = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # [B, C·k·k, L]
            out_h, out_w = conv_output_size(self, height, width)
        matrix = self._matrix()
        if batch == 1:
            out = (matrix @ columns[0]).unsqueeze(0)
        else:  # one product over all images: [C·k·k, B·L]
            stacked = columns.transpose(0, 1).reshape(columns.shape[1], -1)
            out = (matrix @ stacked).reshape(-1, batch, columns.shape[2]).transpose(0, 1)
        out = out.reshape(batch, -1, out_h, out_w)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


PATHS: dict[str, type[nn.Module]] = {"shrunk": Shrunk, "csr": CSR, "direct": Direct}


def candidate_paths(layer: nn.Module) -> dict[str, nn.Module]:
    """{path name: module} of every path that applies to `layer` and is worth timing there,
    "dense" (the layer) first."""
    candidates: dict[str, nn.Module] = {"dense": layer}
    if isinstance(layer, (nn.Conv2d, nn.Linear)):
        for name, path in PATHS.items():
            if path.applies(layer) and path.worth_timing(layer):
                candidates[name] = path(layer)
    return candidates


def build_path(layer: nn.Module, name: str) -> nn.Module:
    """The module that runs `layer` by path `name` (from a recorded plan).

    Raises ValueError if `name` is not a path or does not apply to `layer`."""
    if name == "dense":
        return layer
    if name not in PATHS or not PATHS[name].applies(layer):
        raise ValueError(f"path {name!r} does not apply to {layer}")
    return PATHS[name](layer)
