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
        mirror = "none" if obj.mirror_axis is None else "xyz"[obj.mirror_axis]
        print(f"  {name:<22} diameter {obj.diameter * 100:6.1f} cm  symmetry {obj.symmetry} "
              f"({len(obj.symmetry_rotations)} look-alike poses)  mirror plane {mirror}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Export a checkpoint's crop network and detector to ONNX (and TensorRT plans)."""
    from hoi_perception.engines.export import export_main

    written = export_main(args.checkpoint, args.format, args.out, device=args.device, precision=args.precision,
                          max_batch=args.max_batch, object_name=args.object, objects=args.objects)
    for name, path in written.items():
        print(f"{name:<16} {path}")
    return 0


def estimator_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` overrides, then ``--hand-frontend`` as the ``hand_frontend`` setting."""
    return list(args.set) + ([f"hand_frontend={args.hand_frontend}"] if args.hand_frontend else [])


def add_hand_frontend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hand-frontend", choices=("network", "mediapipe"), default=None,
                        help="where the hands come from: the network, or MediaPipe Hands with a MANO fit (models from "
                             "hoi-perception install-mediapipe-models) (default: the config's hand_frontend, network)")


def node_output_settings(config: str | None):
    """What the node would publish with ``config``'s ``node:`` parameters (topics, frames, publish),
    for a node named ``hoi_perception``: process-bag and run --bag write exactly that."""
    from hoi_perception.pipeline.messages import DEFAULT_NODE_NAME
    from hoi_perception.ros.node_logic import output_settings
    from hoi_perception.ros.params import load_node_params

    return output_settings(load_node_params(config), DEFAULT_NODE_NAME)


def _cmd_process_bag(args: argparse.Namespace) -> int:
    """Run the estimator over a ROS 2 bag and write the results as a bag."""
    from hoi_perception.pipeline.bag_processing import process_bag_main

    process_bag_main(args.in_bag, args.out_bag, image_topic=args.image_topic, camera_info_topic=args.camera_info_topic,
                     depth_topic=args.depth_topic, config=args.config, storage=args.storage,
                     use_depth=not args.no_depth, overwrite=args.overwrite, outputs=node_output_settings(args.config),
                     overrides=estimator_overrides(args))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """Run the estimator on a video file or a webcam."""
    from hoi_perception.pipeline.video import run_main

    run_main(video=args.video, camera=args.camera, intrinsics=args.intrinsics, out=args.out, config=args.config,
             show=args.show, bag=args.bag, overrides=estimator_overrides(args), hfov_deg=args.hfov,
             max_frames=args.max_frames,
             overwrite=args.overwrite, outputs=node_output_settings(args.config))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """Run the shipped (or a given) checkpoint on a generated labelled sequence; write bag, video, frames, report."""
    from hoi_perception.pipeline.demo import demo_main

    demo_main(args.out, checkpoint=args.checkpoint, config=args.config, overrides=estimator_overrides(args))
    return 0


def _cmd_install_mediapipe_models(args: argparse.Namespace) -> int:
    """Take MediaPipe Hands' two model files out of the pinned mediapipe wheel into the model folder."""
    from hoi_perception.frontends.mediapipe_models import install_models

    folder, status = install_models(args.wheel, args.dest)
    for name, state in status.items():
        print(f"{state:<10} {folder / name}")
    return 0


def _cmd_convert_mediapipe_models(args: argparse.Namespace) -> int:
    """ONNX copies of MediaPipe Hands' models (for the onnxruntime/tensorrt engines), checked against LiteRT."""
    from hoi_perception.frontends.mediapipe_models import ONNX_TOLERANCE, convert_models

    folder, errors = convert_models(args.dir, args.converter_python)
    for name, error in errors.items():
        print(f"converted  {folder / name}: largest difference from LiteRT {error:.1e} of the output range "
              f"(limit {ONNX_TOLERANCE:.0e})")
    return 0


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` shows every option's default unless its help already states one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == [] \
            or action.default == argparse.SUPPRESS
        if "default" in text or unset or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hoi-perception", formatter_class=DefaultsHelpFormatter,
        description="3D hand mesh and object 6-DoF pose estimation from camera images.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_subparser_class(DefaultsHelpFormatter))

    info = sub.add_parser("info", help="show libraries, devices, hand model files and objects in use")
    info.add_argument("--mano-dir", default=None,
                      help="folder with MANO_RIGHT/MANO_LEFT .pkl/.npz (default: $HOI_MANO_DIR, else the stand-in)")
    info.add_argument("--objects", default=None, help="object library YAML (default: config/objects.yaml)")
    info.set_defaults(func=_cmd_info)

    demo = sub.add_parser("demo", help="run the shipped checkpoint on a generated hand-object sequence: MCAP bag, "
                                       "overlay video, PNG frames, latency and accuracy against ground truth")
    demo.add_argument("--out", default="hoi_perception_demo",
                      help="output folder (default: hoi_perception_demo); a rerun reuses its sequence and ONNX export")
    demo.add_argument("--checkpoint", default=None,
                      help="training checkpoint (.pt) (default: the shipped hoi_perception/checkpoints/"
                           "cpu_r18_synthetic.pt)")
    demo.add_argument("--config", default=None, help="perception YAML (default: config/perception.yaml)")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override an estimator setting, e.g. --set engine.kind=torch (repeatable)")
    add_hand_frontend_option(demo)
    demo.set_defaults(func=_cmd_demo)

    export = sub.add_parser("export", help="export a checkpoint to ONNX, or to TensorRT plans on a GPU machine")
    export.add_argument("--checkpoint", required=True, help="training checkpoint (.pt)")
    export.add_argument("--format", choices=("onnx", "tensorrt"), default="onnx", help="output format")
    export.add_argument("--out", required=True, help="output folder for <model>_crop/_detector files")
    export.add_argument("--device", default="cuda", help="TensorRT: CUDA device (default cuda)")
    export.add_argument("--precision", choices=("fp32", "fp16"), default="fp32", help="TensorRT precision")
    export.add_argument("--max-batch", type=int, default=4, help="TensorRT: largest batch the plan accepts")
    export.add_argument("--object", default=None,
                        help="models with `refine: dma`: the object whose graph the refinement graphs carry")
    export.add_argument("--objects", default=None, help="object library YAML (default: config/objects.yaml)")
    export.set_defaults(func=_cmd_export)

    bag = sub.add_parser("process-bag", help="estimate hands and objects in a ROS 2 bag; write TF, markers and "
                                             "HandObjectEstimate messages to a new bag")
    bag.add_argument("in_bag", help="input rosbag2 folder (sqlite3 or MCAP)")
    bag.add_argument("out_bag", help="output rosbag2 folder (must not exist unless --overwrite)")
    bag.add_argument("--image-topic", default=None, help="colour Image or CompressedImage topic (default: auto)")
    bag.add_argument("--camera-info-topic", default=None, help="CameraInfo topic (default: auto)")
    bag.add_argument("--depth-topic", default=None, help="aligned 16UC1/32FC1 depth topic (default: auto)")
    bag.add_argument("--no-depth", action="store_true", help="ignore depth even if the bag has it")
    bag.add_argument("--config", default=None, help="perception YAML (default: config/perception.yaml)")
    bag.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="output bag storage")
    bag.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override an estimator setting, e.g. --set crop_model=hfl_r18_crop.onnx (repeatable)")
    bag.add_argument("--overwrite", action="store_true",
                     help="replace an existing output rosbag2 folder (never the input, nor a folder that is not a bag)")
    add_hand_frontend_option(bag)
    bag.set_defaults(func=_cmd_process_bag)

    run = sub.add_parser("run", help="estimate hands and objects in a video file or webcam stream")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", default=None, help="video file")
    source.add_argument("--camera", type=int, default=None, help="webcam index (e.g. 0)")
    run.add_argument("--intrinsics", default=None,
                     help="camera_info YAML/JSON calibration (default: guessed from --hfov, with a warning)")
    run.add_argument("--hfov", type=float, default=60.0, help="horizontal field of view (deg) when no --intrinsics")
    run.add_argument("--out", default=None, help="overlay video to write (.mp4; must not exist unless --overwrite)")
    run.add_argument("--bag", default=None, help="also write an MCAP bag with the images and results")
    run.add_argument("--config", default=None, help="perception YAML (default: config/perception.yaml)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an estimator setting")
    run.add_argument("--show", action="store_true", help="show the overlay in a window (needs GUI OpenCV)")
    run.add_argument("--max-frames", type=positive_int, default=None, help="stop after this many frames")
    run.add_argument("--overwrite", action="store_true",
                     help="replace an existing --out video / --bag folder written by an earlier run (never an input)")
    add_hand_frontend_option(run)
    run.set_defaults(func=_cmd_run)

    models = sub.add_parser("install-mediapipe-models",
                            help="install MediaPipe Hands' palm detector and landmark model (the --hand-frontend "
                                 "mediapipe models) from the mediapipe 0.10.21 wheel, checked against pinned sha256")
    models.add_argument("--wheel", default=None,
                        help="a downloaded mediapipe-0.10.21-*.whl (default: pip download it, without dependencies)")
    models.add_argument("--dest", default=None,
                        help="model folder (default: $HOI_MEDIAPIPE_DIR, else "
                             "$XDG_DATA_HOME/hoi_perception/mediapipe, i.e. ~/.local/share/hoi_perception/mediapipe)")
    models.set_defaults(func=_cmd_install_mediapipe_models)

    convert = sub.add_parser("convert-mediapipe-models",
                             help="ONNX copies of the installed MediaPipe models for mediapipe.engine onnxruntime / "
                                  "tensorrt, converted by tf2onnx and kept only if they give LiteRT's outputs")
    convert.add_argument("--converter-python", required=True,
                         help="a Python interpreter with tf2onnx and tensorflow (e.g. a separate virtual "
                              "environment's bin/python; neither is a dependency of this package)")
    convert.add_argument("--dir", default=None, help="model folder (default: as install-mediapipe-models)")
    convert.set_defaults(func=_cmd_convert_mediapipe_models)
    return parser


def _subparser_class(formatter: type[argparse.HelpFormatter]) -> type[argparse.ArgumentParser]:
    """ArgumentParser whose subcommands use ``formatter`` too."""

    class Parser(argparse.ArgumentParser):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("formatter_class", formatter)
            super().__init__(*args, **kwargs)

    return Parser


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None, logger: logging.Logger) -> int:
    """Parse, set up logging and run the chosen subcommand; expected errors become one log line and exit 2."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from hoi_perception.engines.base import EngineUnavailableError

    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, EngineUnavailableError) as exc:
        logger.error("%s", exc)
        return 2


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv, log)


if __name__ == "__main__":
    sys.exit(main())
