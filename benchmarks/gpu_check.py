"""The GPU checks, in one call: run it when a session is lent the GPU machine (the `device` tool).

    python benchmarks/gpu_check.py --out "$OUT/gpu_check.json"       # there: CUDA, full sizes
    python benchmarks/gpu_check.py --device cpu --quick              # here: the same code paths, tiny sizes

Sections (each says ok or failed with its figures; a failure does not stop the others):

1. amp: the engine trains a tiny quickstart-shaped run with train.amp bf16, then fp16 (GradScaler);
   seconds per step, and the final overall sparsity, which must be the target to ±0.0005.
2. torchrun: `torchrun --nproc_per_node=N -m adapmtl train` (NCCL on CUDA, gloo on CPU), N = the
   devices there are (at least 1): the data-parallel path end to end.
3. controller_cost: the paper's Deeplab-ResNet34 with NYU-v2's three heads (321×321, batch 2;
   --quick: width 1/8, 64×64): median seconds of a training step dense, sparsified, and sparsified
   with `SparsityController.step` every step (its cost on the full model), alternating rounds.
4. compile_fallback: a 90 %-sparse conv + Linear model compiled by `compile_sparse` on CPU, then
   moved to the device: the native paths fall back to PyTorch there and must give the same outputs.
5. real_libraries: where torchvision and timm import, a torchvision ResNet-18 backbone with
   `ModuleDict` heads and a timm ViT-S/16 with two heads: sparsify with components, a few steps,
   finalize to 90 % exactly, and `compile_sparse` on CPU equal to the model.

On the device machine (no pydantic there, nothing can be installed): put the missing wheels in an
ignored folder here, e.g. `pip download -d .gpu_wheels pydantic` for that machine's Python, unpack
them there with `pip install --no-deps --target .gpu_site .gpu_wheels/*.whl` in the command, carry
`.gpu_wheels`, and run with `PYTHONPATH=.gpu_site:.`. The JSON lists each section's error, so a
first run also says what else is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import adapmtl  # noqa: E402  (after the path: runs from a checkout without installing)

TINY = ["data.synthetic_size=[32,48]", "data.crop=[32,48]", "data.synthetic_train=32", "data.synthetic_val=8",
        "data.synthetic_test=8", "data.batch_size=4", "data.eval_batch_size=8", "model.width=0.125",
        "model.head_channels=16", "train.log_every=5", "train.val_every=10", "train.checkpoint_every=10",
        "train.lr_step=10", "train.progress=false", "method.target=0.9"]


def section(name: str, results: dict[str, Any]) -> Callable[[Callable[[], dict[str, Any]]], None]:
    """Run the decorated check now and put {"ok": ..., figures or "error"} under `name`."""

    def run(check: Callable[[], dict[str, Any]]) -> None:
        started = time.perf_counter()
        try:
            results[name] = {"ok": True, **check()}
        except Exception as error:  # a check's failure is a finding, not the end of the script
            results[name] = {"ok": False, "error": f"{type(error).__name__}: {error}",
                             "traceback": traceback.format_exc(limit=6)}
        results[name]["seconds"] = round(time.perf_counter() - started, 1)
        print(f"{name}: {'ok' if results[name]['ok'] else 'FAILED'} {json.dumps(results[name], default=str)[:400]}",
              flush=True)

    return run


def median_seconds(step: Callable[[], None], rounds: int, sync: Callable[[], None]) -> float:
    times = []
    for _ in range(rounds):
        sync()
        started = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test of the script itself)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    results: dict[str, Any] = {"torch": torch.__version__, "device": str(device),
                               "name": torch.cuda.get_device_name(device) if cuda else "cpu", "quick": args.quick}
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    steps = 10 if args.quick else 40

    @section("amp", results)
    def _amp() -> dict[str, Any]:
        from adapmtl.engine import load_config, train

        figures = {}
        for amp in ("bf16", "fp16") if cuda else ("off",):
            config = load_config("quickstart", [*TINY, f"train.steps={steps}", f"train.device={device}",
                                                f"train.amp='{amp}'", f"out_dir={work}"])  # quoted: YAML reads off as false
            started = time.perf_counter()
            result = train(config, work / f"amp_{amp}")
            seconds = time.perf_counter() - started
            overall = result["sparsity"]["overall"]
            if abs(overall - 0.9) > 0.0005:
                raise AssertionError(f"amp {amp}: overall sparsity {overall}, not 0.9")
            figures[amp] = {"seconds_per_step": round(seconds / steps, 4), "overall": overall,
                            "test_depth_abs_err": result["test"]["depth_zbuffer"]["abs_err"]}
        return figures

    @section("torchrun", results)
    def _torchrun() -> dict[str, Any]:
        processes = max(1, torch.cuda.device_count()) if cuda else 2
        run = work / "ddp"
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "-m", "adapmtl",
                   "train", "--config", "quickstart", "--run-dir", str(run), *TINY, f"train.steps={steps}",
                   f"train.device={'cuda' if cuda else 'cpu'}"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()[-800:]}")
        result = json.loads((run / "result.json").read_text())
        return {"processes": processes, "backend": "nccl" if cuda else "gloo", "overall": result["sparsity"]["overall"]}

    @section("controller_cost", results)
    def _controller_cost() -> dict[str, Any]:
        from adapmtl.models import create_model

        tasks = {"segment_semantic": 40, "normal": 3, "depth_zbuffer": 1}
        width, size = (0.125, 64) if args.quick else (1.0, 321)
        x = torch.randn(2, 3, size, size, device=device)

        def trainer(sparse: bool, controller: bool):
            torch.manual_seed(0)
            model = create_model("deeplab_resnet34", tasks, width=width,
                                 head_channels=64 if args.quick else 1024).to(device)
            if sparse:
                adapmtl.sparsify(model, init="auto")
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
            control = adapmtl.SparsityController(model, 0.9, 20_000, interval=1) if controller else None  # worst case
            if control is not None:
                control.attach(optimizer)
            counter = [0]

            def step() -> None:
                counter[0] += 1
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                    out = model(x)
                    loss = sum(o.float().square().mean() for o in out.values())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if control is not None:
                    control.step(counter[0])

            return step

        variants = {"dense": trainer(False, False), "sparse": trainer(True, False),
                    "sparse_controller": trainer(True, True)}
        for step in variants.values():
            step()  # warm-up: kernels chosen, memory allocated
        rounds = 5 if args.quick else 15
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):  # alternating rounds: the machine's noise hits every variant alike
            for name, step in variants.items():
                times[name].append(median_seconds(step, 1, sync))
        medians = {name: statistics.median(t) for name, t in times.items()}
        return {"step_seconds": {k: round(v, 5) for k, v in medians.items()},
                "sparse_over_dense": round(medians["sparse"] / medians["dense"], 3),
                "controller_over_sparse": round(medians["sparse_controller"] / medians["sparse"], 3),
                "width": width, "size": size, "rounds": rounds}

    @section("compile_fallback", results)
    def _compile_fallback() -> dict[str, Any]:
        from adapmtl.inference import compile_sparse

        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                              nn.Flatten(), nn.Linear(32 * 16 * 16, 10))
        with torch.no_grad():
            for layer in (model[0], model[2], model[4]):
                layer.weight.mul_(torch.rand_like(layer.weight) > 0.9)
        x = torch.randn(2, 3, 16, 16)
        compiled = compile_sparse(model.eval(), x)
        paths = compiled.plan.path_counts()
        compiled.to(device)
        with torch.no_grad():
            got = compiled(x.to(device)).cpu()
            expected = model(x)
        difference = float((got - expected).abs().max())
        if difference > 1e-4 * max(1.0, float(expected.abs().max())):
            raise AssertionError(f"on {device} the compiled model differs by {difference}")
        return {"paths": paths, "max_abs_difference": difference}

    @section("real_libraries", results)
    def _real_libraries() -> dict[str, Any]:
        import timm
        import torchvision
        from adapmtl.inference import compile_sparse

        class Heads(nn.Module):
            def __init__(self, backbone: nn.Module, features: int) -> None:
                super().__init__()
                self.backbone = backbone
                self.heads = nn.ModuleDict({"seg": nn.Linear(features, 8), "depth": nn.Linear(features, 1)})

            def forward(self, x):
                features = self.backbone(x)
                return {task: head(features) for task, head in self.heads.items()}

        resnet = torchvision.models.resnet18(num_classes=10)
        resnet.fc = nn.Identity()
        vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
        figures = {"torchvision": torchvision.__version__, "timm": timm.__version__}
        for name, backbone, features, size in (("resnet18", resnet, 512, 64), ("vit_s16", vit, 384, 224)):
            model = Heads(backbone, features)
            adapmtl.sparsify(model, init="auto")
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            control = adapmtl.SparsityController(model, 0.9, 4)
            control.attach(optimizer)
            x = torch.randn(2, 3, size, size)
            for step in range(1, 5):
                loss = sum(o.square().mean() for o in model(x).values())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                control.step(step)
            report = adapmtl.finalize(model, target=0.9)
            compiled = compile_sparse(model.eval(), x[:1])
            with torch.no_grad():
                difference = max(float((compiled(x[:1])[t] - model(x[:1])[t]).abs().max()) for t in ("seg", "depth"))
            figures[name] = {"overall": report.after.overall, "paths": compiled.plan.path_counts(),
                             "max_abs_difference": difference}
            if abs(report.after.overall - 0.9) > 0.0005:
                raise AssertionError(f"{name}: finalize ended at {report.after.overall}")
        return figures

    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps({k: v.get("ok") if isinstance(v, dict) else v for k, v in results.items()}))
    return 0 if all(v.get("ok", True) for v in results.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())
