"""The `adapmtl` command. Thin: it parses arguments, then calls the library.

Each subcommand is one `_add_<name>` function that registers its parser and the
library call it makes, so a new capability adds one function here and nothing else.
"""
from __future__ import annotations

import argparse
import errno
import sys
import warnings
from typing import Callable, Sequence

import adapmtl


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adapmtl",
        description="Adaptive soft-threshold pruning of multitask networks (AdapMTL).",
    )
    parser.add_argument("--version", action="version", version=f"adapmtl {adapmtl.__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def _add_data(subparsers: argparse._SubParsersAction) -> None:
    """`adapmtl data synth ...` writes synthetic scenes and/or a preview; `adapmtl data check DIR` validates."""
    parser = subparsers.add_parser("data", help="write synthetic datasets, check dataset folders")
    commands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    synth = commands.add_parser("synth", help="render synthetic scenes to disk (NYU-v2 or Taskonomy format)")
    synth.add_argument("--out", help="folder to write the dataset into")
    synth.add_argument("--format", choices=["nyuv2", "taskonomy"], default="nyuv2")
    synth.add_argument("--n", type=_positive, default=1000, help="number of scenes (default 1000)")
    synth.add_argument("--size", type=_positive, nargs=2, default=[96, 128], metavar=("H", "W"))
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--preview", help="also write a PNG grid of a few scenes here")

    def run_synth(args: argparse.Namespace) -> int:
        from adapmtl import data

        if args.out is None and args.preview is None:
            raise data.DatasetError("nothing to do: pass --out DIR and/or --preview FILE.png")
        if args.out is not None:
            root = data.write_synthetic(args.out, args.format, n=args.n, size=tuple(args.size), seed=args.seed)
            print(f"wrote {args.n} scenes ({args.size[0]}x{args.size[1]}, {args.format} format) to {root}")
        if args.preview is not None:
            scenes = data.SyntheticScenes(min(args.n, 6), tuple(args.size), seed=args.seed)
            print(f"wrote {data.save_preview([scenes[i] for i in range(len(scenes))], args.preview)}")
        return 0

    synth.set_defaults(run=run_synth)

    check = commands.add_parser("check", help="validate a dataset folder and print a summary")
    check.add_argument("dir", help="dataset folder (NYU-v2 AdaShare or MTAN format, or Taskonomy)")
    check.add_argument("--limit", type=int, default=None, help="read at most this many samples per split")

    def run_check(args: argparse.Namespace) -> int:
        from adapmtl import data

        report = data.check_dataset(args.dir, limit=args.limit)
        print(report.summary())
        return 0 if report.ok else 1

    check.set_defaults(run=run_check)


_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_data]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code.

    Expected failures (bad config or data, unreadable or damaged files, a folder that
    cannot be written, a full disk, Ctrl-C) print one line naming the file or key and
    return 2 (130 for Ctrl-C); `--debug` shows the traceback instead. Anything else is a
    bug and keeps its traceback.
    Raises nothing for expected failures (they become the exit code); a bug's exception propagates.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    warnings.formatwarning = _one_line_warning
    try:
        return int(args.run(args) or 0)
    except (adapmtl.errors.AdapMTLError, OSError, KeyboardInterrupt) as error:
        if args.debug:
            raise
        message, code = describe_failure(error, getattr(args, "interrupt_hint", None))
        print(f"adapmtl {args.command}: {message}", file=sys.stderr)
        return code


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"adapmtl: warning: {message}\n"


def describe_failure(error: BaseException, interrupt_hint: str | None = None) -> tuple[str, int]:
    """One line for an expected failure, and the exit code (2; 130 for Ctrl-C)."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted" + (f"; {interrupt_hint}" if interrupt_hint else ""), 130
    if isinstance(error, OSError) and not isinstance(error, adapmtl.errors.AdapMTLError):
        where = f" {error.filename}" if error.filename else ""
        if error.errno == errno.ENOSPC:
            return f"error: the disk is full (writing{where}); free some space and run the command again", 2
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"error: cannot write{where}: {error.strerror}; choose a writable folder", 2
        if error.errno in (errno.ENOTDIR, errno.EEXIST):
            return f"error: cannot write{where}: a file stands where a folder is needed; choose another folder", 2
        if error.errno == errno.EISDIR:
            return f"error: cannot write{where}: it is a folder; give a file path", 2
        return f"error:{where}: {error.strerror or error}" if where else f"error: {error}", 2
    return f"error: {error}", 2


def _positive(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _resume_hint(run_dir) -> str:
    return (f"`adapmtl train --resume {run_dir}` continues exactly from its last checkpoint "
            "(train.checkpoint_every; none if it stopped before the first)")


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    """`adapmtl train --config FILE [key=value ...]` or `adapmtl train --resume RUN_DIR`."""
    parser = subparsers.add_parser(
        "train", help="train one method from a config (or resume a run)",
        description="Train from a YAML config (a path or a preset name) with key=value overrides, "
        "e.g. `adapmtl train --config quickstart method.target=0.8 train.steps=300`. "
        "Under torchrun it trains data-parallel.",
    )
    parser.add_argument("--config", help="YAML file or preset name (quickstart, nyuv2_resnet34, ...)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run exactly")
    parser.add_argument("--run-dir", help="where to write the run (default: out_dir/name)")
    parser.add_argument("--stop-at", type=int, help="stop after this step with a checkpoint (resume later)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")

    def run(args: argparse.Namespace) -> int:
        from adapmtl import engine

        if args.resume:
            if args.config or args.overrides or args.run_dir:
                raise engine.ConfigError("--resume takes the run folder's own config; drop --config, --run-dir and overrides")
            args.interrupt_hint = _resume_hint(args.resume)
            result = engine.resume(args.resume, stop_at=args.stop_at)
        else:
            if not args.config:
                raise engine.ConfigError("pass --config FILE (or a preset name), or --resume RUN_DIR")
            config = engine.load_config(args.config, args.overrides)
            args.interrupt_hint = _resume_hint(engine.run_dir_of(config, args.run_dir))
            result = engine.train(config, args.run_dir, stop_at=args.stop_at)
        if result is not None:
            print(f"test: {result['test']}\nsparsity: {result['sparsity']['overall']:.4f}")
        else:
            print(f"stopped after step {args.stop_at}; {_resume_hint(args.resume or engine.run_dir_of(config, args.run_dir))}")
        return 0

    parser.set_defaults(run=run)


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    """`adapmtl eval RUN_DIR [--split test] [--which final|best|last]`."""
    parser = subparsers.add_parser("eval", help="re-evaluate a run's model on a split")
    parser.add_argument("run_dir")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--which", default="final", choices=["final", "best", "last"])

    def run(args: argparse.Namespace) -> int:
        import json

        from adapmtl.engine.run_eval import evaluate_run

        print(json.dumps(evaluate_run(args.run_dir, args.split, args.which), indent=2))
        return 0

    parser.set_defaults(run=run)


def _add_quickstart(subparsers: argparse._SubParsersAction) -> None:
    """`adapmtl quickstart`: dense vs AdapMTL at 90 % on synthetic scenes, on CPU, in minutes."""
    parser = subparsers.add_parser("quickstart", help="dense vs AdapMTL at 90%% sparsity on synthetic scenes (CPU, minutes)")
    parser.add_argument("--out", default="runs/quickstart", help="folder for the two runs (default runs/quickstart)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="changes to the quickstart preset")

    def run(args: argparse.Namespace) -> int:
        from adapmtl.quickstart import quickstart

        args.interrupt_hint = "run `adapmtl quickstart` again: a finished run is reused, an interrupted one resumed"
        quickstart(args.out, args.overrides)
        return 0

    parser.set_defaults(run=run)


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    """`adapmtl export RUN_DIR --format dense|sparse|onnx [--half] [--out FILE]`."""
    parser = subparsers.add_parser(
        "export", help="write a finished run's finalized model as dense, compact sparse or ONNX",
        description="dense: plain state dict (safetensors) + JSON spec for create_model; sparse: bitmask + "
        "surviving values (fp16 with --half), prints the size ratio to the dense fp32 file; onnx: checked "
        "with onnxruntime against PyTorch.",
    )
    parser.add_argument("run_dir")
    parser.add_argument("--format", required=True, choices=["dense", "sparse", "onnx"])
    parser.add_argument("--half", action="store_true", help="store weights as fp16 (dense, sparse)")
    parser.add_argument("--out", help="file to write (default RUN_DIR/export/...)")
    parser.add_argument("--size", type=_positive, nargs=2, metavar=("H", "W"), help="ONNX check input size (default: the run's)")

    def run(args: argparse.Namespace) -> int:
        from adapmtl.export import export_run

        print(export_run(args.run_dir, args.format, args.out, half=args.half, input_size=args.size).summary())
        return 0

    parser.set_defaults(run=run)


def _add_bench(subparsers: argparse._SubParsersAction) -> None:
    """`adapmtl bench --config FILE [key=value ...]`: methods × targets × seeds, resumable."""
    parser = subparsers.add_parser(
        "bench", help="compare pruning methods: methods x target sparsities x seeds (resumable)",
        description="Run every method x target x seed of a bench file (a path or a preset name such as "
        "bench_synthetic) through the same engine; finished runs are skipped, interrupted ones resumed. "
        "Writes bench.md, bench.csv and bench.json to the bench's out_dir.",
    )
    parser.add_argument("--config", required=True, help="bench YAML file or preset name (bench_synthetic)")
    parser.add_argument("--table-only", action="store_true", help="only rewrite the tables from finished runs")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. bench.seeds=[0] train.steps=100")

    def run(args: argparse.Namespace) -> int:
        from adapmtl.experiments import load_bench, run_bench, write_outputs

        bench = load_bench(args.config, args.overrides)
        args.interrupt_hint = "run the same command again: finished runs are skipped, the interrupted one resumed"
        content = write_outputs(bench) if args.table_only else run_bench(bench)
        print((bench.out_dir / "bench.md").read_text())
        print(f"wrote {bench.out_dir / 'bench.md'}, bench.csv, bench.json"
              + (f"; {len(content['missing'])} runs missing" if content["missing"] else ""))
        return 0

    parser.set_defaults(run=run)


def _add_report(subparsers: argparse._SubParsersAction) -> None:
    """`adapmtl report RUN_DIR... [--out DIR] [--baseline RUN] [--split test|val]`."""
    parser = subparsers.add_parser(
        "report", help="tables (Markdown, CSV), figures (PNG, SVG) and one HTML page for runs",
        description="Report one or many runs (run folders, or folders holding runs such as a bench's output): "
        "the paper's table with ΔT against the dense run, sparsity/threshold/task-weight/loss curves, per-layer "
        "sparsity, ΔT against sparsity across runs, saved sensitivity sweeps; all in report.html.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--out", help="output folder (default RUN_DIR/report, or the runs' common folder/report)")
    parser.add_argument("--baseline", help="the dense run for ΔT: a run label or folder (default: the dense run found)")
    parser.add_argument("--split", default="test", choices=["test", "val"])

    def run(args: argparse.Namespace) -> int:
        from adapmtl.report import report_summary, write_report

        print(report_summary(write_report(args.run_dirs, args.out, baseline=args.baseline, split=args.split)))
        return 0

    parser.set_defaults(run=run)


def _add_sensitivity(subparsers: argparse._SubParsersAction) -> None:
    """`adapmtl sensitivity RUN_DIR --component NAME [--component NAME ...] [--split val|test]`."""
    parser = subparsers.add_parser(
        "sensitivity", help="prune one component alone further (magnitude, no retraining), plot each task's metric",
        description="For each fraction f, zero the f share of the component's smallest non-zero weights of the "
        "finalized model, evaluate, and plot each task's metric relative to the unpruned model (paper's Figure 5). "
        "Writes <component>.json/.png/.svg into --out (default RUN_DIR/sensitivity, which `adapmtl report` reads).",
    )
    parser.add_argument("run_dir")
    parser.add_argument("--component", action="append", required=True, help="backbone or a task's head; repeatable")
    parser.add_argument("--fractions", type=float, nargs="+", metavar="F", help="shares of the remaining weights to "
                        "prune, increasing, in [0, 1) (default 0 0.1 ... 0.9 0.95 0.99)")
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--out", help="output folder (default RUN_DIR/sensitivity)")

    def run(args: argparse.Namespace) -> int:
        from adapmtl.engine import RunDir
        from adapmtl.experiments import DEFAULT_FRACTIONS, sensitivity_sweep
        from adapmtl.report import write_sensitivity

        for component in args.component:
            result = sensitivity_sweep(args.run_dir, component, args.fractions or DEFAULT_FRACTIONS, args.split)
            for task, values in result.normalised.items():
                print(f"{component} → {task} ({result.primary[task]}): " + " ".join(
                    f"{100 * f:g}%:{v:.3f}" for f, v in zip(result.fractions, values)))
            paths = write_sensitivity(result, args.out or RunDir(args.run_dir).sensitivity_dir)
            print("wrote " + ", ".join(map(str, paths)))
        return 0

    parser.set_defaults(run=run)


def _add_compile(subparsers: argparse._SubParsersAction) -> None:
    """`adapmtl compile RUN_DIR [--batch N] [--size H W] [--threads N] [--rounds N] [--plan FILE]`."""
    parser = subparsers.add_parser(
        "compile", help="run a finished run's sparse model by the fastest path per layer; time it against dense",
        description="Times every layer's execution paths (dense, shrunk, csr, direct) on this machine, keeps the "
        "fastest, prints the speedup over the dense model measured side by side and the slowest layers, and "
        "saves the per-layer plan (reuse it with compile_sparse(model, x, plan=FILE)).",
    )
    parser.add_argument("run_dir")
    parser.add_argument("--batch", type=_positive, default=1, help="images per forward (default 1)")
    parser.add_argument("--size", type=_positive, nargs=2, metavar=("H", "W"), help="input size (default: the run's)")
    parser.add_argument("--threads", type=_positive, help="torch threads (default: torch's choice)")
    parser.add_argument("--rounds", type=_positive, default=5, help="alternating dense/compiled timing rounds")
    parser.add_argument("--plan", help="where to save the plan, replacing a file there (default "
                        "RUN_DIR/export/plan.json); it is written, not read: compile_sparse(model, x, plan=FILE) reuses it")
    parser.add_argument("--top", type=_positive, default=10, help="slowest layers to list")

    def run(args: argparse.Namespace) -> int:
        import torch

        from adapmtl.inference import native
        from adapmtl.inference.speed import compile_run, plan_path, slowest_layers

        if args.threads:
            torch.set_num_threads(args.threads)
        replaced = plan_path(args.run_dir, args.plan).exists()
        compiled, comparison, path = compile_run(args.run_dir, batch=args.batch, size=args.size,
                                                 rounds=args.rounds, plan_out=args.plan)
        print(f"native kernels: convolution {native.status('sparse_conv2d')}; linear {native.status('sparse_linear')}")
        threads = torch.get_num_threads()
        print(f"{threads} thread{'' if threads == 1 else 's'}, batch {args.batch}: {comparison.summary()}")
        print("paths: " + ", ".join(f"{name} {count}" for name, count in compiled.plan.path_counts().items()))
        print(slowest_layers(compiled.plan, args.top))
        print(f"wrote {path}" + (" (it replaced the plan that was there)" if replaced else ""))
        return 0

    parser.set_defaults(run=run)


_SUBCOMMANDS.extend([_add_train, _add_eval, _add_quickstart, _add_bench, _add_report, _add_sensitivity, _add_export,
                     _add_compile])

if __name__ == "__main__":
    raise SystemExit(main())
