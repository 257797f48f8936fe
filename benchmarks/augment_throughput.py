"""Throughput of the `dermoscopy` preset: Kornia batched (eager, compiled) vs torchvision per sample.

Prints images/s and ratios measured side by side in one run, and the share of a CPU training
step (timm resnet18, 64 px, batch 64, forward + backward + AdamW) that the preset costs.

    python benchmarks/augment_throughput.py [--sizes 64 224] [--batch 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torchvision.transforms import v2

CONF = Path(__file__).resolve().parents[1] / "conf" / "augment" / "dermoscopy.yaml"


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Best-of-``repeats`` seconds per call after one warm-up call (less noise on a shared CPU);
    synchronises CUDA so that GPU work is timed, not just launched."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


class _Gamma(torch.nn.Module):
    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.empty(()).uniform_(self.low, self.high)
        return x.clamp(0, 1) ** g


class _Vignette(torch.nn.Module):
    def __init__(self, low: float, high: float, power: float = 2.5) -> None:
        super().__init__()
        self.low, self.high, self.power = low, high, power

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ys = torch.linspace(-1, 1, h)[:, None]
        xs = torch.linspace(-1, 1, w)[None, :]
        r = ((ys**2 + xs**2) / 2).sqrt()
        s = torch.empty(()).uniform_(self.low, self.high)
        return x * (1 - s * r**self.power)


def torchvision_recipe(cfg) -> v2.Compose:
    """The same recipe as `conf/augment/dermoscopy.yaml`, one sample at a time."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(cfg.flip_p),
            v2.RandomVerticalFlip(cfg.flip_p),
            v2.RandomAffine(
                degrees=cfg.degrees,
                translate=(cfg.translate, cfg.translate),
                scale=tuple(cfg.scale),
                interpolation=v2.InterpolationMode.BILINEAR,
            ),
            v2.RandomApply(
                [v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)],
                p=cfg.colour_p,
            ),
            v2.RandomApply([_Gamma(*cfg.gamma)], p=cfg.gamma_p),
            v2.RandomApply([_Vignette(*cfg.vignette_strength)], p=cfg.vignette_p),
            v2.RandomApply([v2.GaussianBlur(cfg.blur_kernel, tuple(cfg.blur_sigma))], p=cfg.blur_p),
        ]
    )


def train_step_seconds(
    batch: int, size: int, repeats: int, device: str = "cpu", name: str = "resnet18"
) -> float:
    """One forward + backward + AdamW step (bf16 autocast on CUDA)."""
    import timm

    model = timm.create_model(name, num_classes=7).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(0, 7, (batch,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return timed(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument(
        "--device", default="cpu", help="cuda: the preset on the GPU, vs a ResNet-50 bf16 step"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = OmegaConf.load(CONF)
    preset = instantiate(cfg).to(args.device)
    tv = torchvision_recipe(cfg)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    compiled = None if args.no_compile else torch.compile(preset)
    aug_64 = None
    # CPU: the default CPU experiment (ResNet-18, 64 px); GPU: ResNet-50 bf16 at 224 px
    step_size, step_model = (224, "resnet50") if args.device == "cuda" else (64, "resnet18")
    for size in args.sizes:
        images = torch.rand(args.batch, 3, size, size, device=args.device)
        cpu_images = images.cpu()
        t_eager = timed(lambda images=images: preset(images), args.repeats)
        t_tv = timed(lambda images=cpu_images: torch.stack([tv(im) for im in images]), args.repeats)
        ips = {"kornia eager": args.batch / t_eager, "torchvision per sample": args.batch / t_tv}
        if compiled is not None:
            try:
                start = time.perf_counter()
                compiled(images)
                compile_s = time.perf_counter() - start
                t_comp = timed(lambda images=images, fn=compiled: fn(images), args.repeats)
                ips["kornia compiled"] = args.batch / t_comp
                print(f"  [{size}px] torch.compile first call (compilation): {compile_s:.1f} s")
            except Exception as err:  # report, don't hide: compile support varies by platform
                print(f"  [{size}px] torch.compile failed: {type(err).__name__}: {err}"[:300])
        print(f"{size}px:")
        for name, value in ips.items():
            print(f"  {name:24s} {value:9.0f} images/s")
        base = ips["torchvision per sample"]
        for name in ("kornia eager", "kornia compiled"):
            if name in ips:
                print(f"  ratio {name} / torchvision per sample: {ips[name] / base:.2f}x")
        if "kornia compiled" in ips:
            print(f"  ratio compiled / eager: {ips['kornia compiled'] / ips['kornia eager']:.2f}x")
        if size == step_size:
            # eager is what training runs (dermlit compiles no augmentation); fastest: a bound
            aug_64 = {
                "eager, as training runs it": args.batch / ips["kornia eager"],
                "fastest variant": args.batch
                / max(ips["kornia eager"], ips.get("kornia compiled", 0.0)),
            }
    if aug_64 is not None:
        step = train_step_seconds(args.batch, step_size, args.repeats, args.device, step_model)
        print(
            f"{step_model} train step ({step_size} px, batch {args.batch}, fwd+bwd+AdamW, "
            f"{args.device}): {step * 1e3:.0f} ms"
        )
        for name, aug in aug_64.items():
            print(
                f"  dermoscopy preset ({name}): {aug * 1e3:.0f} ms = {aug / step:.1%} of the "
                f"step ({aug / (step + aug):.1%} of step + augmentation)"
            )


if __name__ == "__main__":
    main()
