"""Seeing inside a network (Zeiler & Fergus 2014): feature maps, first-layer filters, deconvnet
projections next to guided backpropagation and gradient saliency, and the image patches that
excite a channel most. ``convision inspect`` on the command line; :func:`inspect_model` in Python.

One concept per module: :mod:`.network` (what is inspected), :mod:`.features` (maps and filters),
:mod:`.deconvnet` (Zeiler & Fergus's explicit deconvnet), :mod:`.saliency` (the backward rules),
:mod:`.patches` (top patches), :mod:`.report` (the pictures).
"""

from convision.inspect.deconvnet import (
    DeconvNet,
    plain_stack,
    pool_with_switches,
    unpool,
)
from convision.inspect.features import feature_maps, first_filters, top_channels
from convision.inspect.network import Network, load_network
from convision.inspect.patches import top_patches
from convision.inspect.report import deconv_projection, inspect_model
from convision.inspect.saliency import project_activation, with_relu_rule

__all__ = [
    "DeconvNet",
    "Network",
    "deconv_projection",
    "feature_maps",
    "first_filters",
    "inspect_model",
    "load_network",
    "plain_stack",
    "pool_with_switches",
    "project_activation",
    "top_channels",
    "top_patches",
    "unpool",
    "with_relu_rule",
]
