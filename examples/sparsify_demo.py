"""Sparsify → train with the controller → finalize, on a small Deeplab-ResNet34, on CPU.

The data is a toy stand-in (targets computed from the image) so the example runs
anywhere in about a minute; `adapmtl quickstart` does the same on synthetic scenes.

    python examples/sparsify_demo.py [--steps 90] [--target 0.9]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import adapmtl
from adapmtl.models import create_model


def toy_batch(generator: torch.Generator, batch: int = 8, size: int = 48):
    """Smooth random images; segmentation = brightest channel, depth = mean intensity."""
    noise = torch.rand(batch, 3, size // 8, size // 8, generator=generator)
    image = F.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)
    return image, {"segment_semantic": image.argmax(1), "depth_zbuffer": image.mean(1, keepdim=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=90)
    parser.add_argument("--target", type=float, default=0.9)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = create_model("deeplab_resnet34", {"segment_semantic": 3, "depth_zbuffer": 1}, width=0.125, head_channels=32)
    adapmtl.sparsify(model)  # components inferred: backbone, segment_semantic, depth_zbuffer
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999), weight_decay=1e-4)
    controller = adapmtl.SparsityController(model, target=args.target, total_steps=args.steps)
    generator = torch.Generator().manual_seed(1)

    for step in range(1, args.steps + 1):
        image, targets = toy_batch(generator)
        out = model(image)
        loss = F.cross_entropy(out["segment_semantic"], targets["segment_semantic"]) + F.l1_loss(
            out["depth_zbuffer"], targets["depth_zbuffer"]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        report = controller.step(step)
        if step % 30 == 0 or step == 1:
            print(f"step {step:4d}  loss {loss.item():.4f}  sparsity {adapmtl.sparsity_report(model).overall:.4f}")

    print("\nLearned allocation before finalize:")
    print(report)
    print()
    print(adapmtl.finalize(model, target=args.target))
    print("\nFinalized model (ordinary Conv2d layers, real zeros):")
    print(adapmtl.sparsity_report(model))


if __name__ == "__main__":
    main()
