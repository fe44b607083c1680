"""Fully connected CRF post-processing of segmentation probabilities.

Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge Potentials"
(NIPS 2011): every pair of pixels i, j is connected, with the pairwise potential

    mu(x_i, x_j) * [ w_b exp(-|p_i-p_j|^2 / 2 sxy_b^2 - |I_i-I_j|^2 / 2 srgb_b^2)   (bilateral, "appearance")
                   + w_g exp(-|p_i-p_j|^2 / 2 sxy_g^2) ]                             (Gaussian, "smoothness")

and Potts compatibility mu (a penalty ``compat`` for different labels). Mean-field inference
runs ``iterations`` message-passing steps with permutohedral-lattice filtering. The unary term is
-log of the network's softmax, as in DeepLab (Chen et al., "Semantic Image Segmentation with Deep
Convolutional Nets and Fully Connected CRFs", ICLR 2015), which popularised this post-processing.

The implementation is Krähenbühl's C++ code through ``pydensecrf2`` (a maintained, buildable
fork of Lucas Beyer's ``pydensecrf`` bindings; ``pip install 'convision[crf]'``).

Defaults: 5 iterations, Gaussian sxy=3, compat=3, bilateral sxy=80, srgb=13, compat=10 - the
values of ``pydensecrf``'s README example, which many DeepLab re-implementations use; DeepLab
fixes the Gaussian term at w=3, sxy=3 and cross-validates the bilateral term on VOC (~500 px
images). ``sxy`` is in pixels and ``srgb`` in 0..255 intensity units, so for much smaller images
(the 128x128 built-in scenes) a smaller ``sxy_bilateral`` suits better (see bench/crf_effect.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from convision.errors import ConfigError, DataError

CRF_DEFAULTS: dict[str, float | int] = {
    "iterations": 5,
    "sxy_gaussian": 3.0,
    "compat_gaussian": 3.0,
    "sxy_bilateral": 80.0,
    "srgb_bilateral": 13.0,
    "compat_bilateral": 10.0,
}
_PROB_FLOOR = 1e-8  # -log(0) would be infinite


def crf_settings(crf: dict[str, Any] | bool | None) -> dict[str, float | int] | None:
    """``None``/``False`` -> None (no CRF); ``True`` or a dict -> the full, validated settings
    (defaults filled in). Raises a one-line ConfigError for unknown keys or bad values."""
    if crf is None or crf is False:
        return None
    if crf is True:
        crf = {}
    if not isinstance(crf, dict):
        raise ConfigError(
            f"crf: expected None, True or a dict of settings, got {type(crf).__name__}"
        )
    unknown = [k for k in crf if k not in CRF_DEFAULTS]
    if unknown:
        raise ConfigError(
            f"crf: unknown setting {unknown[0]!r} (known: {', '.join(CRF_DEFAULTS)})"
        )
    settings = {**CRF_DEFAULTS, **crf}
    it = settings["iterations"]
    if isinstance(it, bool) or not isinstance(it, (int, np.integer)) or it < 1:
        raise ConfigError(f"crf_iterations: expected a whole number >= 1, got {it!r}")
    settings["iterations"] = int(it)
    for key in ("sxy_gaussian", "sxy_bilateral", "srgb_bilateral"):
        v = settings[key]
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float, np.number))
            or not math.isfinite(v)
            or v <= 0
        ):
            raise ConfigError(
                f"crf_{key}: expected a number > 0 (a standard deviation), got {v!r}"
            )
        settings[key] = float(v)
    for key in ("compat_gaussian", "compat_bilateral"):
        v = settings[key]
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float, np.number))
            or not math.isfinite(v)
            or v < 0
        ):
            raise ConfigError(
                f"crf_{key}: expected a number >= 0 (a kernel weight), got {v!r}"
            )
        settings[key] = float(v)
    return settings


def dense_crf(
    image: np.ndarray,
    probs: np.ndarray | torch.Tensor,
    *,
    iterations: int = 5,
    sxy_gaussian: float = 3,
    compat_gaussian: float = 3,
    sxy_bilateral: float = 80,
    srgb_bilateral: float = 13,
    compat_bilateral: float = 10,
) -> np.ndarray | torch.Tensor:
    """Refine softmax ``probs`` [C,H,W] of the RGB uint8 ``image`` [H,W,3] with a fully connected
    CRF; returns the mean-field marginals [C,H,W] (each pixel sums to 1), as a float32 numpy array,
    or a tensor on ``probs``' device if ``probs`` is a tensor."""
    s = crf_settings(
        dict(
            iterations=iterations,
            sxy_gaussian=sxy_gaussian,
            compat_gaussian=compat_gaussian,
            sxy_bilateral=sxy_bilateral,
            srgb_bilateral=srgb_bilateral,
            compat_bilateral=compat_bilateral,
        )
    )
    assert s is not None
    as_tensor = isinstance(probs, torch.Tensor)
    p = (
        probs.detach().float().cpu().numpy()
        if as_tensor
        else np.asarray(probs, dtype=np.float32)
    )
    img = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise DataError(
            f"crf: expected an RGB uint8 image HxWx3, got {img.dtype} {tuple(img.shape)}"
        )
    if p.ndim != 3 or p.shape[1:] != img.shape[:2]:
        raise DataError(
            f"crf: probabilities {tuple(p.shape)} do not match the image {tuple(img.shape)} (want CxHxW)"
        )
    if not np.isfinite(p).all():
        raise DataError("crf: probabilities hold NaN or infinite values")
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise ConfigError(
            "crf: needs the pydensecrf2 package (pip install 'convision[crf]')"
        ) from None

    C, H, W = p.shape
    unary = -np.log(np.clip(p, _PROB_FLOOR, None)).reshape(C, -1)
    model = dcrf.DenseCRF2D(W, H, C)
    model.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    model.addPairwiseGaussian(sxy=s["sxy_gaussian"], compat=s["compat_gaussian"])
    rgb = np.require(
        img, requirements=["C", "W"]
    )  # the bindings take writable C-contiguous buffers only
    model.addPairwiseBilateral(
        sxy=s["sxy_bilateral"],
        srgb=s["srgb_bilateral"],
        rgbim=rgb,
        compat=s["compat_bilateral"],
    )
    q = np.asarray(model.inference(s["iterations"]), dtype=np.float32).reshape(C, H, W)
    if as_tensor:
        return torch.from_numpy(q).to(probs.device)
    return q
