"""`hoi-train`: data generation, training, evaluation and pseudo-labelling."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("hoi_training")


def _cmd_synth(args: argparse.Namespace) -> int:
    from hoi_perception.config import load_config
    from hoi_perception.synth.config import SynthConfig
    from hoi_perception.synth.generator import generate_dataset

    config = load_config(SynthConfig, args.config, args.set)
    generate_dataset(config, out_dir=args.out, sequences=args.sequences, frames=args.frames, seed=args.seed,
                     domain=args.domain, write_bags=args.bag, mano_dir=args.mano_dir, objects_path=args.objects,
                     workers=args.workers)
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from hoi_training.trainer import fit_main

    if args.resume and args.out is not None:
        _check_resumable(Path(args.out) / "checkpoints" / "last.pt")

    return fit_main(args.config, args.set, args.resume, args.out)


def _check_resumable(last: Path) -> None:
    """A run resumes from a training checkpoint; a released file there (no optimiser state) is refused."""
    from hoi_training.release import is_release_file

    if is_release_file(last):
        raise ValueError(f"--resume: '{last}' is a released checkpoint (weights only, no optimiser state), not a "
                         "training checkpoint; it cannot be resumed - start a new run with init_checkpoint")


def _cmd_eval(args: argparse.Namespace) -> int:
    from hoi_training.evaluate import eval_main

    return eval_main(args.checkpoint, args.data, args.out, args.set)


def _cmd_pseudolabel(args: argparse.Namespace) -> int:
    from hoi_training.pseudolabel.pipeline import pseudolabel_main

    return pseudolabel_main(args.checkpoint, args.source, args.input, args.out, args.config, args.set,
                            args.perception, args.perception_set, args.teacher)


def _cmd_release(args: argparse.Namespace) -> int:
    from hoi_training.release import release_checkpoint

    summary = release_checkpoint(args.checkpoint, args.out, fp16=not args.fp32, overwrite=args.overwrite)
    print(f"wrote {summary['path']}: {summary['bytes'] / 1e6:.1f} MB, {summary['parameters'] / 1e6:.2f} M "
          f"{summary['dtype']} weights from step {summary['step']}")
    return 0


def _cmd_curves(args: argparse.Namespace) -> int:
    from hoi_training.curves import curves_main

    return curves_main(args.run, args.out, args.smooth, args.title)


def build_parser() -> argparse.ArgumentParser:
    from hoi_perception.cli import DefaultsHelpFormatter, _subparser_class

    parser = argparse.ArgumentParser(prog="hoi-train", description="Training side of hoi_perception.",
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_subparser_class(DefaultsHelpFormatter))

    synth = sub.add_parser("synth", help="render synthetic hand-object video sequences with full labels")
    synth.add_argument("--out", required=True, help="output folder (must not hold a finished dataset)")
    synth.add_argument("--sequences", type=int, default=4, help="number of sequences (default 4)")
    synth.add_argument("--frames", type=int, default=30, help="frames per sequence (default 30)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, same data")
    synth.add_argument("--domain", default="lab", help="appearance domain from the config: lab or wild")
    synth.add_argument("--workers", type=int, default=1,
                       help="processes rendering sequences in parallel (default 1; the data do not depend on it)")
    synth.add_argument("--bag", action="store_true", help="also write each sequence as a ROS 2 bag (MCAP)")
    synth.add_argument("--config", default="synth.yaml", help="generator config (default config/synth.yaml)")
    synth.add_argument("--objects", default=None, help="object library YAML (default config/objects.yaml)")
    synth.add_argument("--mano-dir", default=None, help="real MANO files to use instead of the stand-in hand")
    synth.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set camera.width=320 (repeatable)")
    synth.set_defaults(func=_cmd_synth)

    fit = sub.add_parser("fit", help="train a model (under torchrun for several GPUs or nodes)")
    fit.add_argument("--config", default=None,
                     help="training config, e.g. train/synthetic_hfl_r18.yaml (optional with --resume)")
    fit.add_argument("--out", default=None, help="run folder (default: the config's output_dir)")
    fit.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoints/last.pt")
    fit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set batch_size=8 (repeatable)")
    fit.set_defaults(func=_cmd_fit)

    evaluate = sub.add_parser("eval", help="score a checkpoint on a dataset split (JSON and Markdown report)")
    evaluate.add_argument("--checkpoint", required=True, help="training checkpoint (.pt)")
    evaluate.add_argument("--data", required=True,
                          help="evaluation config YAML (dataset, objects, boxes: ground_truth|detected)")
    evaluate.add_argument("--out", required=True, help="report folder")
    evaluate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a value of the evaluation config, e.g. --set boxes=detected")
    evaluate.set_defaults(func=_cmd_eval)

    pseudo = sub.add_parser("pseudolabel",
                            help="pseudo-label unlabelled recordings with a trained checkpoint (sharded, resumable)")
    pseudo.add_argument("--checkpoint", required=True, help="training checkpoint (.pt)")
    pseudo.add_argument("--source", required=True, choices=["bag", "video", "ssv2", "synthetic"],
                        help="kind of --input")
    pseudo.add_argument("--input", required=True,
                        help="bag or folder of bags, video or folder of videos, SSv2 video folder, synthetic dataset")
    pseudo.add_argument("--out", required=True, help="output folder (run the same command again to resume)")
    pseudo.add_argument("--config", default=None, help="pseudo-label config (default config/pseudolabel.yaml)")
    pseudo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable)")
    pseudo.add_argument("--perception", default=None,
                        help="runtime config whose estimator: section gives the crop, detection and hand translation "
                             "settings (default config/perception.yaml)")
    pseudo.add_argument("--perception-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one of those estimator settings, e.g. detection.hand_score_threshold=0.1 "
                             "(repeatable)")
    pseudo.add_argument("--teacher", default=None, choices=["none", "mediapipe"],
                        help="real-image teacher whose 2D landmarks check each pseudo-label (the teacher_2d "
                             "constraint; frames it finds no hand in are rejected). mediapipe needs "
                             "`hoi-perception install-mediapipe-models`; its settings are --perception's "
                             "estimator.mediapipe (default: the config's teacher.kind, none)")
    pseudo.set_defaults(func=_cmd_pseudolabel)

    release = sub.add_parser("release", help="shrink a training checkpoint to the runtime's file (config + "
                                             "fp16 weights)")
    release.add_argument("--checkpoint", required=True, help="training checkpoint (.pt)")
    release.add_argument("--out", required=True, help="released file, e.g. hoi_perception/checkpoints/NAME.pt")
    release.add_argument("--fp32", action="store_true", help="keep float32 weights")
    release.add_argument("--overwrite", action="store_true",
                         help="replace an existing released file (never --checkpoint, nor a training checkpoint)")
    release.set_defaults(func=_cmd_release)

    curves = sub.add_parser("curves", help="plot the training curves of one or more runs (stages end to end) "
                                           "as a PNG, from their TensorBoard logs")
    curves.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR",
                        help="a run folder of hoi-train fit, in stage order (repeatable)")
    curves.add_argument("--out", required=True, help="the PNG to write")
    curves.add_argument("--smooth", type=int, default=9, help="moving-average window, in logged points")
    curves.add_argument("--title", default="", help="figure title")
    curves.set_defaults(func=_cmd_curves)
    return parser


def main(argv: list[str] | None = None) -> int:
    from hoi_perception.cli import run_command

    return run_command(build_parser(), argv, log)


if __name__ == "__main__":
    sys.exit(main())
