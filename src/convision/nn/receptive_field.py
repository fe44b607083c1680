"""Per-layer summary of a network: output shape, parameters, multiply-adds, receptive field, stride.

:func:`summarize` runs one real forward pass (batch 1, zeros, ``torch.no_grad()``, eval mode) with
forward hooks on every leaf module (and on every module that owns parameters directly) and returns
one :class:`LayerInfo` per call, in execution order, plus the totals (:class:`Summary`).

Counting conventions
--------------------
* **Parameters**: each parameter is counted once, on the first module call that owns it (shared
  modules called twice, like ResNet's ``relu``, show 0 on the later rows). ``trainable`` counts those
  with ``requires_grad`` (frozen ones -- FCN's fixed bilinear upsampling -- are in ``params`` but not in
  ``trainable``). Parameters of modules the forward pass never calls are one last row
  ``(not called)``, so ``Summary.total_params == sum(p.numel() for p in model.parameters())``;
  except that parameters of a module that is not called but whose nearest called ancestor uses them
  directly (``nn.MultiheadAttention``'s ``out_proj``) are added to that ancestor's row.
* **Multiply-adds** (batch 1, bias additions not counted): convolution
  ``k_h*k_w*C_in/groups*C_out*H_out*W_out``; transposed convolution by its *input* positions,
  ``k_h*k_w*C_in*C_out/groups*H_in*W_in``; ``Linear`` ``in*out`` (times any extra leading dimensions).
  Everything else counts 0: batch norm (foldable into the preceding convolution), pooling,
  activations, dropout, parameter-free upsampling, and tensor operations outside modules (residual
  additions, concatenations, attention's matrix products).

Receptive field and stride (jump)
---------------------------------
For each axis, with ``r`` the receptive-field size and ``j`` the jump (distance in input pixels
between adjacent positions of the map, i.e. the cumulative stride), a layer with kernel ``k``,
stride ``s`` and dilation ``d`` gives (Dumoulin & Visin, "A guide to convolution arithmetic for deep
learning", 2016; Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural
Networks", Distill 2019)::

    k_eff = d * (k - 1) + 1
    r_out = r_in + (k_eff - 1) * j_in
    j_out = j_in * s

starting from ``r = 1, j = 1`` at the input. Pooling layers use the same rule. Layers that go the
other way reduce the jump: a transposed convolution with stride ``s`` gives ``j_out = j_in / s`` and,
since each output position sees at most ``ceil(k_eff / s)`` input positions,
``r_out = r_in + (ceil(k_eff / s) - 1) * j_in``; ``nn.Upsample`` by a factor ``f`` gives
``j_out = j_in / f`` and ``r_out = r_in`` (nearest), ``+ j_in`` (bilinear), ``+ 3 j_in`` (bicubic);
max unpooling gives ``j_out = j_in / s``, ``r_out = r_in``. Adaptive pooling uses its largest window
as ``k`` and ``in / out`` as ``s``; a ``Linear`` layer on a flattened ``h x w`` map is a ``h x w``
convolution (so VGG16's fc6 sees 404 pixels, as its convolutional form in FCN does). A layer with a
single output position (global pooling, ``Linear``) keeps ``j`` (there is no neighbour to be a
jump away), so a classifier's head shows the stride of its last map. Layers that
keep the spatial size (batch norm, activations, dropout) pass ``r`` and ``j`` through. Jumps are
kept as exact fractions.

The receptive field is well defined only along a sequential path. Rather than chaining the
recurrence over the rows in the order the hooks fire (which, in a ResNet block, would apply the
stride of the shortcut's 1x1 convolution on top of the main branch's), ``r`` and ``j`` are attached to
tensors and follow the data flow: every torch operation outside the hooked modules (additions,
concatenations, padding, cropping, ``flatten``, functional pooling/interpolation) is seen through a
``TorchFunctionMode``; where branches meet (ResNet's sum, Inception's and U-Net's concatenations,
FCN's skip fusion) the result takes the **largest** ``r`` and the **smallest** ``j`` of its inputs.
So for a branching network the value is that of the path with the largest receptive field through
the layers executed so far -- the usual upper-bound style figure (the theoretical receptive field;
the *effective* one, where the gradient is appreciable, is much smaller). Padding and cropping
do not change ``r`` (they move the centre, which is not reported). A leaf module of an unknown type
that changes the spatial size is treated as pooling with kernel = stride = ``in / out``
(approximate); padding modules, ``Linear`` on channels-last maps and axis permutations pass ``r`` and
``j`` through. A global branch makes everything after it global: squeeze-and-excitation blocks
(EfficientNet, MobileNetV3) multiply by a globally pooled vector, so the receptive field after the
first one exceeds the image. The tracking assumes NCHW maps: token layouts (ViT, Swin) are not
meaningful here.

:func:`gradient_receptive_field` measures the receptive field instead: it backpropagates from one
output position and returns the extent of the input pixels with a non-zero gradient (exact for
convolutions, average pooling and ReLU with the positive weights it installs; a lower bound when
max pooling routes the gradient to one pixel per window).
"""

from __future__ import annotations

import copy
import math
import weakref
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

__all__ = ["LayerInfo", "Summary", "summarize", "gradient_receptive_field"]

Pair = tuple[Fraction, Fraction]


@dataclass
class LayerInfo:
    """One module call. ``output_shape`` has no batch dimension; ``receptive_field`` and ``stride``
    are ``(height, width)`` in input pixels (None where no tracked tensor reached the layer)."""

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    trainable: int
    mult_adds: int
    receptive_field: tuple[float, float] | None = None
    stride: tuple[float, float] | None = None

    @property
    def rf(self) -> float | None:
        """The larger side of the receptive field (square for square kernels)."""
        return None if self.receptive_field is None else max(self.receptive_field)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "output_shape": list(self.output_shape),
            "params": self.params,
            "trainable": self.trainable,
            "mult_adds": self.mult_adds,
            "receptive_field": None
            if self.receptive_field is None
            else list(self.receptive_field),
            "stride": None if self.stride is None else list(self.stride),
        }


class Summary(list):
    """``list[LayerInfo]`` with the totals: ``total_params`` (= ``sum(p.numel())`` over the model's
    parameters), ``trainable_params``, ``total_mult_adds``; ``input_size`` is ``(C, H, W)``."""

    def __init__(
        self,
        layers: Sequence[LayerInfo],
        input_size: tuple[int, ...],
        total_params: int,
        trainable_params: int,
    ) -> None:
        super().__init__(layers)
        self.input_size = tuple(input_size)
        self.total_params = total_params
        self.trainable_params = trainable_params
        self.total_mult_adds = sum(layer.mult_adds for layer in layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_size": list(self.input_size),
            "layers": [layer.to_dict() for layer in self],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "total_mult_adds": self.total_mult_adds,
        }

    def table(self, max_rows: int | None = None) -> str:
        """A plain-text table (name, type, output shape, params, mult-adds, RF, stride) and totals."""
        head = ("layer", "type", "output shape", "params", "mult-adds", "RF", "stride")
        rows = [
            (
                layer.name,
                layer.type,
                "x".join(map(str, layer.output_shape)) or "-",
                f"{layer.params:,}",
                f"{layer.mult_adds:,}",
                _fmt_pair(layer.receptive_field),
                _fmt_pair(layer.stride),
            )
            for layer in self
        ]
        skipped = 0
        if max_rows is not None and len(rows) > max_rows:
            skipped = len(rows) - max_rows
            rows = rows[: max_rows - max_rows // 2] + rows[len(rows) - max_rows // 2 :]
        widths = [
            max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(head)
        ]
        right = {3, 4, 5, 6}

        def line(cells: Sequence[str]) -> str:
            return "  ".join(
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths))
            ).rstrip()

        out = [line(head), "  ".join("-" * w for w in widths)]
        for i, r in enumerate(rows):
            if skipped and i == len(rows) - max_rows // 2:
                out.append(f"... ({skipped} rows not shown)")
            out.append(line(r))
        out.append("  ".join("-" * w for w in widths))
        frozen = self.total_params - self.trainable_params
        out.append(f"input: {'x'.join(map(str, self.input_size))}")
        out.append(
            f"total params: {self.total_params:,} (trainable {self.trainable_params:,}, frozen {frozen:,})"
        )
        out.append(
            f"total mult-adds: {self.total_mult_adds:,} ({self.total_mult_adds / 1e9:.2f} G)"
        )
        return "\n".join(out)


def _fmt_num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{float(v):.3g}"


def _fmt_pair(p: tuple[float, float] | None) -> str:
    if p is None:
        return "-"
    return _fmt_num(p[0]) if p[0] == p[1] else f"{_fmt_num(p[0])}x{_fmt_num(p[1])}"


@dataclass(frozen=True)
class _RF:
    r: Pair
    j: Pair
    hw: (
        tuple[int, int] | None
    )  # spatial size of the last 4-D map on the path (for Linear after flatten)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1])) if len(v) else (1, 1)
    return int(v), int(v)


def _hw(t: Tensor) -> tuple[int, int] | None:
    return (int(t.shape[-2]), int(t.shape[-1])) if t.dim() == 4 else None


def _kernel_rule(
    info: _RF, k: tuple[int, int], s: tuple[Any, Any], d: tuple[int, int] = (1, 1)
) -> tuple[Pair, Pair]:
    r = tuple(info.r[a] + (d[a] * (k[a] - 1)) * info.j[a] for a in range(2))
    j = tuple(info.j[a] * Fraction(s[a]) for a in range(2))
    return r, j  # type: ignore[return-value]


def _window_rule(
    info: _RF, hin: tuple[int, int], hout: tuple[int, int]
) -> tuple[Pair, Pair]:
    """Adaptive pooling (and unknown size-reducing layers): largest window as k, in/out as s."""
    k = []
    for n_in, n_out in zip(hin, hout):
        k.append(
            max(
                math.ceil((i + 1) * n_in / n_out) - (i * n_in) // n_out
                for i in range(n_out)
            )
            if n_out
            else 1
        )
    # one output position has no neighbour: its jump is undefined and kept (s = 1)
    s = tuple(
        Fraction(n_in, n_out) if n_out > 1 else Fraction(1)
        for n_in, n_out in zip(hin, hout)
    )
    return _kernel_rule(info, (k[0], k[1]), s)


def _upsample_rule(
    info: _RF, hin: tuple[int, int], hout: tuple[int, int], taps: int
) -> tuple[Pair, Pair]:
    r = tuple(info.r[a] + (taps - 1) * info.j[a] for a in range(2))
    j = tuple(info.j[a] * Fraction(hin[a], hout[a]) for a in range(2))
    return r, j  # type: ignore[return-value]


_TAPS = {
    "nearest": 1,
    "nearest-exact": 1,
    "area": 1,
    "linear": 2,
    "bilinear": 2,
    "trilinear": 2,
    "bicubic": 4,
}


def _resample(
    info: _RF, hin: tuple[int, int] | None, hout: tuple[int, int] | None, taps: int = 2
) -> tuple[Pair, Pair]:
    if hin is None or hout is None or hin == hout:
        return info.r, info.j
    if hout[0] >= hin[0] and hout[1] >= hin[1]:
        return _upsample_rule(info, hin, hout, taps)
    return _window_rule(info, hin, hout)


def _module_rule(
    m: nn.Module, info: _RF, x: Tensor, out: Tensor
) -> tuple[Pair, Pair, tuple[int, int] | None]:
    """(r, j, hw) of ``m``'s output given its input ``x`` and the input's ``info``."""
    hin, hout = _hw(x), _hw(out)
    if isinstance(m, nn.modules.conv._ConvTransposeNd) and x.dim() == 4:
        k, s, d = _pair(m.kernel_size), _pair(m.stride), _pair(m.dilation)
        taps = [math.ceil((d[a] * (k[a] - 1) + 1) / s[a]) for a in range(2)]
        r = tuple(info.r[a] + (taps[a] - 1) * info.j[a] for a in range(2))
        j = tuple(info.j[a] / s[a] for a in range(2))
        return r, j, hout  # type: ignore[return-value]
    if isinstance(m, nn.modules.conv._ConvNd) and x.dim() == 4:
        r, j = _kernel_rule(
            info, _pair(m.kernel_size), _pair(m.stride), _pair(m.dilation)
        )
        return r, j, hout
    if isinstance(m, nn.MaxPool2d):
        k = _pair(m.kernel_size)
        r, j = _kernel_rule(
            info, k, _pair(m.stride if m.stride is not None else k), _pair(m.dilation)
        )
        return r, j, hout
    if isinstance(m, (nn.AvgPool2d, nn.LPPool2d)):
        k = _pair(m.kernel_size)
        r, j = _kernel_rule(info, k, _pair(m.stride if m.stride is not None else k))
        return r, j, hout
    if isinstance(m, nn.MaxUnpool2d):
        s = _pair(m.stride)
        return info.r, (info.j[0] / s[0], info.j[1] / s[1]), hout
    if isinstance(m, nn.Upsample):
        r, j = _resample(info, hin, hout, _TAPS.get(str(m.mode), 2))
        return r, j, hout
    if (
        isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))
        and hin is not None
        and hout is not None
    ):
        r, j = _window_rule(info, hin, hout)
        return r, j, hout
    if isinstance(m, nn.Linear):
        if x.dim() == 2 and info.hw is not None:
            h, w = info.hw
            r, j = _kernel_rule(
                info, (h, w), (1, 1)
            )  # one output position: the jump is kept
            return r, j, (1, 1)
        return info.r, info.j, info.hw  # over the last (channel) dimension: point-wise
    if type(m).__module__ == "torch.nn.modules.padding":
        return info.r, info.j, hout
    if isinstance(m, nn.PixelShuffle) and hin is not None and hout is not None:
        r, j = _upsample_rule(info, hin, hout, 1)
        return r, j, hout
    if (
        out.numel() == x.numel()
        and sorted(out.shape) == sorted(x.shape)
        and out.shape != x.shape
    ):
        return (
            info.r,
            info.j,
            info.hw,
        )  # a permutation of the axes (ConvNeXt's NCHW <-> NHWC)
    if (
        hin is not None and hout is not None
    ):  # PixelUnshuffle, or an unknown size-changing layer
        r, j = _resample(info, hin, hout)
        return r, j, hout
    return info.r, info.j, hout if hout is not None else info.hw


def _mult_adds(m: nn.Module, x: Tensor | None, out: Tensor | None) -> int:
    weight = getattr(m, "weight", None)
    if not isinstance(weight, Tensor) or out is None:
        return 0
    if isinstance(m, nn.modules.conv._ConvTransposeNd) and x is not None:
        return weight.numel() * math.prod(x.shape[2:])
    if isinstance(m, nn.modules.conv._ConvNd):
        return weight.numel() * math.prod(out.shape[2:])
    if isinstance(m, nn.Linear):
        return weight.numel() * math.prod(out.shape[1:-1])
    return 0


def _tensors(obj: Any) -> list[Tensor]:
    return [t for t in tree_flatten(obj)[0] if isinstance(t, Tensor)]


class _Tracker(TorchFunctionMode):
    """Attaches (r, j) to tensors and propagates it through every torch operation outside leaf modules."""

    _RESAMPLE = (
        "max_pool",
        "avg_pool",
        "lp_pool",
        "adaptive",
        "interpolate",
        "upsample",
        "conv2d",
        "conv_transpose2d",
    )

    def __init__(self) -> None:
        super().__init__()
        self.infos: dict[int, tuple[weakref.ref, _RF]] = {}
        self.depth = (
            0  # > 0 inside a leaf module or a hook: operations are not propagated
        )

    def get(self, t: Tensor) -> _RF | None:
        entry = self.infos.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def set(self, t: Tensor, info: _RF) -> None:
        self.infos[id(t)] = (weakref.ref(t), info)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth == 0:
            self.depth += 1
            try:
                self._propagate(func, args, kwargs, out)
            finally:
                self.depth -= 1
        return out

    def _propagate(self, func, args, kwargs, out) -> None:
        outs = _tensors(out)
        if not outs:
            return
        ins = _tensors((args, kwargs))
        tracked = [(t, i) for t in ins if (i := self.get(t)) is not None]
        if not tracked:
            return
        name = getattr(func, "__name__", "")
        x, info = tracked[0]
        if (
            any(key in name for key in self._RESAMPLE)
            and x.dim() == 4
            and outs[0].dim() == 4
        ):
            mode = kwargs.get(
                "mode",
                args[3] if name == "interpolate" and len(args) > 3 else "nearest",
            )
            r, j = _functional_rule(
                name, info, x, outs[0], args, kwargs, _TAPS.get(str(mode), 2)
            )
        else:  # element-wise, concatenation, padding, cropping, reshaping: largest r, smallest j
            r = tuple(max(i.r[a] for _, i in tracked) for a in range(2))
            j = tuple(min(i.j[a] for _, i in tracked) for a in range(2))
        for t in outs:
            self.set(t, _RF(r, j, _hw(t) or info.hw))  # type: ignore[arg-type]


def _functional_rule(
    name: str, info: _RF, x: Tensor, out: Tensor, args, kwargs, taps: int
) -> tuple[Pair, Pair]:
    def arg(i: int, key: str, default: Any) -> Any:
        return kwargs.get(key, args[i] if len(args) > i else default)

    if ("max_pool" in name or "avg_pool" in name) and "adaptive" not in name:
        k = _pair(arg(1, "kernel_size", 1))
        stride = arg(2, "stride", None)
        s = _pair(stride if stride not in (None, []) else k)
        d = _pair(arg(4, "dilation", 1)) if "max_pool" in name else (1, 1)
        return _kernel_rule(info, k, s, d)
    if name in ("conv2d", "conv_transpose2d"):
        w = arg(1, "weight", None)
        if isinstance(w, Tensor) and name == "conv2d":
            return _kernel_rule(
                info,
                (w.shape[-2], w.shape[-1]),
                _pair(arg(3, "stride", 1)),
                _pair(arg(5, "dilation", 1)),
            )
    if "adaptive" in name:
        return _window_rule(info, _hw(x), _hw(out))  # type: ignore[arg-type]
    return _resample(info, _hw(x), _hw(out), taps)


def summarize(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> Summary:
    """Per-layer :class:`LayerInfo` of ``model`` for one input of ``input_size`` = ``(C, H, W)``.

    One forward pass of a zero tensor of shape ``[1, C, H, W]`` under ``torch.no_grad()`` with the
    model in eval mode (its mode is restored afterwards), on the device of its first parameter.
    See the module notes for what is counted and how the receptive field and stride are computed.
    """
    input_size = tuple(int(v) for v in input_size)
    if len(input_size) != 3 or min(input_size) < 1:
        raise ValueError(
            f"input_size must be (C, H, W) with positive sides, got {input_size}"
        )
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    dtype = (
        params[0].dtype if params and params[0].is_floating_point() else torch.float32
    )
    names = {id(m): (n or type(m).__name__) for n, m in model.named_modules()}
    tracker = _Tracker()
    rows: list[LayerInfo] = []
    counted: set[int] = set()
    handles = []

    def pre_hook(module: nn.Module, args: Any) -> None:
        tracker.depth += 1

    def make_hook(leaf: bool):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if leaf:
                tracker.depth -= 1
            tracker.depth += 1
            try:
                _record(module, args, output, leaf)
            finally:
                tracker.depth -= 1

        return hook

    def _record(module: nn.Module, args: Any, output: Any, leaf: bool) -> None:
        ins, outs = _tensors(args), _tensors(output)
        x = ins[0] if ins else None
        out = outs[0] if outs else None
        own = [p for p in module.parameters(recurse=False) if id(p) not in counted]
        counted.update(id(p) for p in own)
        info = next((i for t in ins if (i := tracker.get(t)) is not None), None)
        rf = stride = None
        if leaf and info is not None and x is not None and out is not None:
            r, j, hw = _module_rule(module, info, x, out)
            for t in outs:
                tracker.set(t, _RF(r, j, _hw(t) or hw))
        out_info = tracker.get(out) if out is not None else None
        if out_info is not None:
            rf = (_plain(out_info.r[0]), _plain(out_info.r[1]))
            stride = (_plain(out_info.j[0]), _plain(out_info.j[1]))
        rows.append(
            LayerInfo(
                name=names.get(id(module), type(module).__name__),
                type=type(module).__name__,
                output_shape=tuple(out.shape[1:]) if out is not None else (),
                params=sum(p.numel() for p in own),
                trainable=sum(p.numel() for p in own if p.requires_grad),
                mult_adds=_mult_adds(module, x, out),
                receptive_field=rf,
                stride=stride,
            )
        )

    for m in model.modules():
        leaf = next(m.children(), None) is None
        if leaf or next(m.parameters(recurse=False), None) is not None:
            if leaf:
                handles.append(m.register_forward_pre_hook(pre_hook))
            handles.append(m.register_forward_hook(make_hook(leaf)))
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, *input_size, device=device, dtype=dtype)
        one = Fraction(1)
        tracker.set(x, _RF((one, one), (one, one), (input_size[1], input_size[2])))
        with torch.no_grad(), tracker:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    # parameters a called module uses without calling their own module (MultiheadAttention's
    # out_proj) belong to the nearest called ancestor's row
    row_of = {}
    for row in rows:
        row_of.setdefault(row.name, row)
    for mname, m in model.named_modules():
        own = [p for p in m.parameters(recurse=False) if id(p) not in counted]
        parts = mname.split(".") if mname else []
        while own and parts:
            parts.pop()
            row = row_of.get(".".join(parts) or type(model).__name__)
            if row is not None:
                counted.update(id(p) for p in own)
                row.params += sum(p.numel() for p in own)
                row.trainable += sum(p.numel() for p in own if p.requires_grad)
                own = []
    uncalled = [p for p in params if id(p) not in counted]
    if uncalled:
        rows.append(
            LayerInfo(
                "(not called)",
                "-",
                (),
                sum(p.numel() for p in uncalled),
                sum(p.numel() for p in uncalled if p.requires_grad),
                0,
            )
        )
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return Summary(rows, input_size, total, trainable)


def _plain(v: Fraction) -> float:
    return int(v) if v.denominator == 1 else float(v)


def gradient_receptive_field(
    model: nn.Module,
    input_size: Sequence[int],
    position: tuple[int, int] | None = None,
    positive_weights: bool = True,
) -> tuple[int, int]:
    """Measured receptive field ``(height, width)`` of one output position, by backpropagation.

    Backpropagates ``sum over channels of output[0, :, y, x]`` (``position``; default the centre;
    for a 2-D output, all of it) to a random positive input of ``input_size`` = ``(C, H, W)`` and
    returns the extent of the bounding box of the input pixels with a non-zero gradient. Works on a
    float64 copy of ``model`` in eval mode; with ``positive_weights`` (default) every weight of the
    copy is set to a positive random value scaled by ``1 / fan_in`` (biases 0, norm weights 1) so
    that no ReLU is inactive and no gradients cancel. Exact for convolutions, average pooling and
    ReLU; a lower bound with max pooling (one pixel per window gets the gradient). The input must
    be large enough to hold the whole receptive field, or it is clipped at the border.
    """
    net = copy.deepcopy(model).double().eval()
    if positive_weights:
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in net.named_parameters():
                if p.dim() > 1:
                    fan_in = p[0].numel()
                    p.copy_(
                        (torch.rand(p.shape, generator=gen, dtype=p.dtype) + 0.5)
                        / fan_in
                    )
                else:
                    p.fill_(1.0 if name.endswith("weight") else 0.0)
    gen = torch.Generator().manual_seed(1)
    x = (
        torch.rand((1, *input_size), generator=gen, dtype=torch.float64) + 0.5
    ).requires_grad_(True)
    out = net(x)
    if not isinstance(out, Tensor):
        out = _tensors(out)[0]
    if out.dim() == 4:
        y, xx = (
            position
            if position is not None
            else (out.shape[-2] // 2, out.shape[-1] // 2)
        )
        target = out[0, :, y, xx].sum()
    else:
        target = out[0].sum()
    (grad,) = torch.autograd.grad(target, x)
    hit = grad[0].abs().sum(0) != 0
    rows = hit.any(1).nonzero().flatten()
    cols = hit.any(0).nonzero().flatten()
    if rows.numel() == 0:
        return 0, 0
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
