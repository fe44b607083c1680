"""Training throughput and inference latency of convision's FCNs, with torchvision's
``fcn_resnet50`` measured in the same run as the peer.

torchvision's FCN is a different design (dilated ResNet-50 kept at stride 8, single 8x bilinear
upsampling, no skip fusion); it is the FCN people get from torchvision, so it is the natural
thing to compare with. convision's ``fcn8s`` with a ResNet-50 backbone is the same backbone
with the paper's skip architecture. Ratios > 1 mean convision is faster.

    .venv/bin/python bench/segmentation_speed.py [--size 320] [--batch 4] [--steps 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
import torchvision

from convision.models import build_model


def train_images_per_s(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    out_key: str | None,
) -> float:
    model.train()
    opt = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9
    )

    def step() -> None:
        out = model(x)
        logits = out[out_key] if out_key else out
        loss = F.cross_entropy(logits, y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    _sync(x)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(x)
    return steps * x.shape[0] / (time.perf_counter() - t)


@torch.no_grad()
def latency_ms(
    model: torch.nn.Module, x: torch.Tensor, steps: int, out_key: str | None
) -> float:
    model.eval()
    model(x[:1])
    _sync(x)
    best = float("inf")
    for _ in range(steps):
        t = time.perf_counter()
        out = model(x[:1])
        if out_key:
            out = out[out_key]
        _sync(x)
        best = min(best, time.perf_counter() - t)
    return best * 1000


def _sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--classes", type=int, default=21)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, device=dev)
    y = torch.randint(0, args.classes, (args.batch, args.size, args.size), device=dev)

    rows = []
    peer = torchvision.models.segmentation.fcn_resnet50(
        weights=None, weights_backbone=None, num_classes=args.classes, aux_loss=False
    ).to(dev)
    peer_train = train_images_per_s(peer, x, y, args.steps, "out")
    peer_lat = latency_ms(peer, x, args.steps, "out")
    rows.append(("torchvision fcn_resnet50", peer_train, peer_lat))
    del peer
    for name in ("fcn32s", "fcn16s", "fcn8s"):
        for backbone in ("resnet50", "mobilenet_v2", "vgg16"):
            model = build_model(
                name, num_classes=args.classes, backbone=backbone, weights=None
            ).to(dev)
            rows.append(
                (
                    f"convision {name} {backbone}",
                    train_images_per_s(model, x, y, args.steps, None),
                    latency_ms(model, x, args.steps, None),
                )
            )
            del model
    print(
        f"input {args.size}x{args.size}, train batch {args.batch}, {args.classes} classes, device {dev}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"{'model':34s} {'train img/s':>11s} {'vs peer':>8s} {'latency ms':>11s} {'vs peer':>8s}"
    )
    for label, ips, lat in rows:
        print(
            f"{label:34s} {ips:11.2f} {ips / peer_train:7.2f}x {lat:11.1f} {peer_lat / lat:7.2f}x"
        )


if __name__ == "__main__":
    main()
