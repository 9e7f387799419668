"""Deploy a trained forecaster: export it, or forecast from a data file.

    python -m sdkd_pipeline.deploy export \\
        --checkpoint data/06_models/navier_stokes/students/unet/sdkd.pt --out exported/
    python -m sdkd_pipeline.deploy pick --dataset navier_stokes --budget-ms 5 --batch 1 \\
        --threads 1
    python -m sdkd_pipeline.deploy predict --model exported/unet_sdkd.onnx \\
        --input data/02_intermediate/navier_stokes_raw.zarr --output forecast.nc \\
        [--time-index N] [--trajectory K]

``export`` writes ``<model>_<method>.pt`` (TorchScript) and ``<model>_<method>.onnx`` into
``--out``, checks both against PyTorch (onnxruntime for ONNX) and prints the results as JSON.
``pick --dataset D --budget-ms B [--batch N --threads T]`` times every student trained on D
(eager, TorchScript and ONNX), writes the accuracy-latency Pareto plot and names the student
of lowest validation MSE within the budget, with its file.
``predict`` takes the T_in frames ending at ``--time-index`` (default: the last ones), runs the
model (an exported file or a checkpoint) and writes the forecast in physical units with the
input's coordinates (NetCDF, or Zarr when ``--output`` ends in ``.zarr``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sdkd_pipeline.deploy.export import export_onnx, export_torchscript
from sdkd_pipeline.deploy.forecast import predict
from sdkd_pipeline.deploy.runtime import check_onnx, check_torchscript
from sdkd_pipeline.errors import ConfigError, SDKDError
from sdkd_pipeline.models.checkpoint import Checkpoint


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sdkd_pipeline.deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    exp = sub.add_parser("export", help="export a checkpoint to TorchScript and ONNX")
    exp.add_argument("--checkpoint", required=True, type=Path, help="checkpoint (.pt) file")
    exp.add_argument("--out", required=True, type=Path, help="output directory")
    exp.add_argument(
        "--formats",
        default="torchscript,onnx",
        help="comma-separated: torchscript, onnx (default both)",
    )
    exp.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    exp.add_argument("--no-check", action="store_true", help="skip the checks against PyTorch")
    exp.add_argument("--atol", type=float, default=1e-4)
    exp.add_argument("--rtol", type=float, default=1e-3)

    pred = sub.add_parser("predict", help="forecast from a Zarr store or NetCDF file")
    pred.add_argument(
        "--model",
        required=True,
        type=Path,
        help="exported model (.onnx or TorchScript .pt) or checkpoint",
    )
    pred.add_argument("--input", required=True, type=Path, help="Zarr store or NetCDF file")
    pred.add_argument("--output", required=True, type=Path, help=".nc file or .zarr store")
    pred.add_argument(
        "--time-index",
        type=int,
        default=None,
        help="index of the last input frame (default: the last time step)",
    )
    pred.add_argument("--trajectory", type=int, default=0)
    pred.add_argument(
        "--trust-torchscript",
        action="store_true",
        help="allow a TorchScript --model: loading one runs the code it holds (ONNX does not)",
    )
    pred.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output (never the input)"
    )
    pred.add_argument("--variable", default="fields")

    pick = sub.add_parser(
        "pick",
        help="time every trained student and name the most accurate within a latency budget",
    )
    pick.add_argument("--dataset", required=True, help="dataset the students trained on")
    pick.add_argument(
        "--budget-ms", required=True, type=float, help="median latency allowed per call (ms)"
    )
    pick.add_argument("--batch", type=int, default=1, help="forecasts per call (default 1)")
    pick.add_argument(
        "--threads", type=int, default=1, help="CPU threads (default 1; 0: torch's default)"
    )
    pick.add_argument("--device", default="cpu", help="cpu, cuda or auto (eager models)")
    pick.add_argument(
        "--formats",
        default="eager,torchscript,onnx",
        help="comma-separated: eager, torchscript, onnx (default all)",
    )
    pick.add_argument("--models-dir", type=Path, default=Path("data/06_models"))
    pick.add_argument(
        "--exports-dir", type=Path, default=None, help="default <models-dir>/<dataset>/exports"
    )
    pick.add_argument(
        "--out",
        type=Path,
        default=Path("data/08_reporting/pick"),
        help="where pick_<dataset>_b<batch>.json and .png go",
    )
    pick.add_argument("--repeats", type=int, default=20, help="timed calls per candidate")
    return parser


def _pick(args: argparse.Namespace) -> dict:
    from sdkd_pipeline.deploy.pick import pick_student, write_pick

    if args.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {args.repeats}")
    result = pick_student(
        args.dataset,
        args.budget_ms,
        batch=args.batch,
        threads=args.threads or None,
        device=args.device,
        formats=[f.strip().lower() for f in args.formats.split(",") if f.strip()],
        models_dir=args.models_dir,
        exports_dir=args.exports_dir,
        repeats=args.repeats,
    )
    files = write_pick(result, args.out)
    chosen = result.chosen
    print(
        f"best within {args.budget_ms:g} ms: {chosen.label}, validation MSE "
        f"{chosen.val_mse:.4g}, {chosen.latency_ms:.3g} ms -> {chosen.path}",
        file=sys.stderr,
    )
    return {
        "chosen": {
            "student": chosen.student,
            "method": chosen.method,
            "format": chosen.format,
            "path": chosen.path,
            "val_mse": chosen.val_mse,
            "latency_ms": chosen.latency_ms,
        },
        "pareto_front": [result.candidates[i].label for i in result.front],
        "skipped": result.skipped,
        **files,
    }


def _export(args: argparse.Namespace) -> dict:
    formats = [f.strip().lower() for f in args.formats.split(",") if f.strip()]
    unknown = sorted(set(formats) - {"torchscript", "onnx"})
    if unknown or not formats:
        raise SystemExit(f"--formats: unknown format(s) {unknown}; use torchscript, onnx")
    checkpoint = Checkpoint.of(args.checkpoint)
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict = {"checkpoint": str(args.checkpoint)}
    if "torchscript" in formats:
        path = export_torchscript(checkpoint, args.out)
        entry: dict = {"path": str(path)}
        if not args.no_check:
            entry["max_abs_diff"] = check_torchscript(
                checkpoint, path, atol=args.atol, rtol=args.rtol
            )
        result["torchscript"] = entry
    if "onnx" in formats:
        path = export_onnx(checkpoint, args.out, opset=args.opset)
        entry = {"path": str(path)}
        if not args.no_check:
            entry["max_abs_diff"] = check_onnx(checkpoint, path, atol=args.atol, rtol=args.rtol)
        result["onnx"] = entry
    return result


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "export":
            result = _export(args)
        elif args.command == "pick":
            result = _pick(args)
        else:
            out = predict(
                args.model,
                args.input,
                args.output,
                time_index=args.time_index,
                trajectory=args.trajectory,
                variable=args.variable,
                overwrite=args.overwrite,
                trust_torchscript=args.trust_torchscript,
            )
            result = {"output": str(out)}
    except (SDKDError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
