"""`hoi-perception`: the runtime command line (no ROS needed)."""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("hoi_perception")


def _cmd_info(args: argparse.Namespace) -> int:
    """Print what this installation will use: libraries, devices, hand model files, objects."""
    import platform

    import numpy
    import torch

    from hoi_perception.hand_model.mano import resolve_mano_file
    from hoi_perception.objects.models import load_object_library

    print(f"python       {platform.python_version()}")
    print(f"numpy        {numpy.__version__}")
    print(f"torch        {torch.__version__} (CUDA available: {torch.cuda.is_available()})")
    try:
        import onnxruntime

        print(f"onnxruntime  {onnxruntime.__version__} providers={onnxruntime.get_available_providers()}")
    except ImportError:
        print("onnxruntime  not installed")
    for side in ("right", "left"):
        print(f"hand model   {side}: {resolve_mano_file(side, args.mano_dir)}")
    library = load_object_library(args.objects)
    print(f"objects      {len(library)} from {args.objects or 'config/objects.yaml'}")
    for name in sorted(library):
        obj = library[name]
        print(f"  {name:<22} diameter {obj.diameter * 100:6.1f} cm  symmetry {obj.symmetry}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Export a checkpoint's crop network and detector to ONNX (and TensorRT plans)."""
    from hoi_perception.engines.export import export_main

    written = export_main(args.checkpoint, args.format, args.out, device=args.device, precision=args.precision,
                          max_batch=args.max_batch)
    for name, path in written.items():
        print(f"{name:<16} {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hoi-perception",
        description="3D hand mesh and object 6-DoF pose estimation from camera images.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="show libraries, devices, hand model files and objects in use")
    info.add_argument("--mano-dir", default=None,
                      help="folder with MANO_RIGHT/MANO_LEFT .pkl/.npz (default: $HOI_MANO_DIR, else the stand-in)")
    info.add_argument("--objects", default=None, help="object library YAML (default: config/objects.yaml)")
    info.set_defaults(func=_cmd_info)

    export = sub.add_parser("export", help="export a checkpoint to ONNX, or to TensorRT plans on a GPU machine")
    export.add_argument("--checkpoint", required=True, help="training checkpoint (.pt)")
    export.add_argument("--format", choices=("onnx", "tensorrt"), default="onnx", help="output format")
    export.add_argument("--out", required=True, help="output folder for <model>_crop/_detector files")
    export.add_argument("--device", default="cuda", help="TensorRT: CUDA device (default cuda)")
    export.add_argument("--precision", choices=("fp32", "fp16"), default="fp32", help="TensorRT precision")
    export.add_argument("--max-batch", type=int, default=4, help="TensorRT: largest batch the plan accepts")
    export.set_defaults(func=_cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from hoi_perception.engines.base import EngineUnavailableError

    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, EngineUnavailableError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
