"""The ``stnet`` command line: one subcommand per stage of the workflow.

Settings are ``--key value`` flags over a YAML config (``--config ucf101`` or a path), exactly the
reference's convention; ``stnet config`` prints what a run would use. User errors (bad keys, missing
files, weights that do not fit) end in one ``stnet: error: ...`` line, exit code 2 for configuration
mistakes and 1 otherwise.
"""

from __future__ import annotations

import argparse
import math
import sys
import typing
from collections.abc import Callable, Sequence

from stnet import __version__
from stnet.argtypes import float_arg, int_arg, workers_arg
from stnet.config import Config, load_config
from stnet.errors import ConfigError, StnetError, UserError, os_error_line

CONFIG_HELP = "config YAML: a path or a built-in name (ucf101, kinetics400); then any --key value overrides"


def _config_from(args: argparse.Namespace, rest: Sequence[str]) -> Config:
    return load_config(args.config, list(rest))


def cmd_version(args: argparse.Namespace, rest: Sequence[str]) -> int:
    import torch

    print(f"stnet {__version__} (torch {torch.__version__}, python {sys.version.split()[0]})")
    return 0


def cmd_config(args: argparse.Namespace, rest: Sequence[str]) -> int:
    cfg = _config_from(args, rest)
    print(cfg.to_yaml(), end="")
    if args.model_summary:
        from stnet.model import build_model, summary_table

        print()
        print(summary_table(build_model(cfg)))
    return 0


def cmd_convert(args: argparse.Namespace, rest: Sequence[str]) -> int:
    if rest:
        raise UserError(f"unexpected arguments: {' '.join(rest)}")
    from stnet.weights import convert_weights

    if not args.output.endswith(".safetensors"):
        raise UserError(f"the output must be a .safetensors file, not {args.output}")
    kind, count = convert_weights(args.input, args.output)
    what = "ImageNet ResNet backbone" if kind == "resnet" else "whole StNet"
    print(f"wrote {args.output}: {count} tensors ({what} weights)")
    return 0


def cmd_check(args: argparse.Namespace, rest: Sequence[str]) -> int:
    """Build the configured model, optionally load weights, and time a forward and a backward pass."""
    import time

    import torch

    from stnet.model import build_model, count_parameters
    from stnet.runtime import resolve_device

    cfg = _config_from(args, rest)
    if args.batch * cfg.T < 2:  # BatchNorm in training mode needs two values per channel
        raise ConfigError(
            f"a training step on batch {args.batch} x T {cfg.T} gives BatchNorm one value per channel: "
            "use --batch 2"
        )
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    if args.weights:
        from stnet.weights import load_weights

        print(load_weights(model, args.weights).summary())
    model.to(device)
    shape = (args.batch, cfg.T, 3 * cfg.N, cfg.target_size, cfg.target_size)
    x = torch.randn(shape, device=device)
    labels = torch.arange(args.batch, device=device) % cfg.class_num
    print(f"StNet-R{cfg.depth}: {count_parameters(model) / 1e6:.2f} M parameters on {device}; input {shape}")
    for _ in range(2):  # the first step warms up allocators and kernels
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        model.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        start = time.perf_counter()
        logits = model(x)
        infer = time.perf_counter() - start
    if not torch.isfinite(logits).all() or not torch.isfinite(loss):
        raise UserError("the model produced non-finite values")
    print(
        f"train step (fp32, batch {args.batch}): {elapsed * 1000:.0f} ms, loss {loss.item():.3f} "
        f"(≈ ln {cfg.class_num} = {math.log(cfg.class_num):.3f} for a fresh model)"
    )
    print(f"inference (batch {args.batch}): {infer * 1000:.0f} ms, logits {tuple(logits.shape)}")
    print("check passed")
    return 0


def cmd_train(args: argparse.Namespace, rest: Sequence[str]) -> int:
    import dataclasses

    from stnet.datasets import build_dataset, with_frame_colors
    from stnet.distributed import distributed_run
    from stnet.engine import fit
    from stnet.runtime import resolve_device

    cfg = _config_from(args, rest)
    train_set = build_dataset(cfg, "train")
    cfg = with_frame_colors(cfg, train_set)  # recorded in the checkpoints
    if train_set.spec.fixed_aspect != cfg.fixed_aspect:  # the store's frames were prepared 4:3
        cfg = dataclasses.replace(cfg, fixed_aspect=train_set.spec.fixed_aspect)
    val_set = build_dataset(cfg, "val") if cfg.run_eval else None
    with distributed_run(resolve_device(cfg.device)) as dist:
        classes = train_set.classes or [str(i) for i in range(cfg.class_num)]
        fit(cfg, train_set, val_set, classes, dist=dist)
    return 0


def cmd_eval(args: argparse.Namespace, rest: Sequence[str]) -> int:
    import json

    from stnet.checkpoint import checkpoint_config
    from stnet.distributed import distributed_run
    from stnet.evaluation import run_eval
    from stnet.runtime import resolve_device

    cfg = checkpoint_config(args.checkpoint, args.config, rest)
    with distributed_run(resolve_device(cfg.device)) as dist:
        outputs = run_eval(
            cfg,
            args.checkpoint,
            split=args.split,
            clips=args.clips,
            crops=args.crops,
            out_dir=args.out,
            dist=dist,
            skip_unreadable=args.skip_unreadable,
        )
    if outputs.result is None:  # not rank 0
        return 0
    result = outputs.result
    if args.json:
        print(json.dumps({"checkpoint": args.checkpoint, "split": args.split, **result.to_json()}))
    else:
        print(result.summary_line())
        print(result.reference_line(args.checkpoint))
    if outputs.report_error:
        print(f"stnet: error: the reports were not written: {outputs.report_error}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"reports in {outputs.out_dir}: per_class.csv, confusion.png, scores.npz, eval.json")
    return 0


def cmd_export(args: argparse.Namespace, rest: Sequence[str]) -> int:
    from pathlib import Path

    from stnet.export import check_output, export_lock, format_for

    format_for(args.out, args.format)
    config_file = args.config if args.config and Path(args.config).is_file() else None
    check_output(args.out, [args.checkpoint, args.classes, args.calibration, config_file])
    with export_lock(args.out):
        return _export(args, rest)


def _export(args: argparse.Namespace, rest: Sequence[str]) -> int:
    import dataclasses

    from stnet.checkpoint import checkpoint_config, model_for_checkpoint
    from stnet.export import calibration_clips, check_output, export_model
    from stnet.runners import ModelInfo, class_names_for

    cfg = checkpoint_config(args.checkpoint, args.config, rest)
    model, cfg, classes = model_for_checkpoint(args.checkpoint, cfg)
    if args.T is not None:  # T only sets the sampling: the weights do not depend on it
        cfg = dataclasses.replace(cfg, T=args.T)
    if args.size is not None and args.size != cfg.target_size:  # keep the crop/resize ratio of training
        short = round(cfg.short_size * args.size / cfg.target_size)
        cfg = dataclasses.replace(cfg, target_size=args.size, short_size=short)
    info = ModelInfo.from_config(cfg, class_names_for(cfg, classes, args.classes))
    calibration = None
    if args.calibration and not args.quantize:
        raise UserError("--calibration is for int8 quantization: add --quantize int8")
    if args.quantize == "int8":
        data = args.calibration or cfg.dataset_path
        if not data:
            raise UserError("--quantize int8 needs clips to calibrate on: pass --calibration DATASET_DIR")
        check_output(args.out, [data])  # the checkpoint's own dataset_path, when no --calibration
        calibration = calibration_clips(info, data, args.calibration_split, args.calibration_clips)
    report = export_model(
        model,
        info,
        args.out,
        args.format,
        tolerance=args.tolerance,
        calibration=calibration,
        min_agreement=args.min_agreement,
    )
    print(
        f"wrote {report.path} ({report.fmt} {report.info.precision}, {report.size_bytes / 2**20:.1f} MiB): "
        f"StNet-R{cfg.depth}, "
        f"{info.num_classes} classes, input (batch, {'T' if info.dynamic_T else info.T}, {3 * info.N}, "
        f"{info.size}, {info.size}) with T={info.T} by default, {info.recipe} sampling"
    )
    print(
        f"verified: max |logit difference| to PyTorch = {report.max_abs_diff:.2e} "
        f"(tolerance {args.tolerance:g})" + (" before quantization" if calibration is not None else "")
    )
    if report.agreement is not None:
        runs = ", ".join(f"{a:.1%} in {name}" for name, a in report.agreement_by_backend.items())
        print(
            f"int8: same top-1 class as fp32 PyTorch on {runs} of {len(calibration or [])} "
            f"calibration clips ({args.calibration_split} split); measure its accuracy with stnet infer"
        )
    return 0


def cmd_infer(args: argparse.Namespace, rest: Sequence[str]) -> int:
    import json
    from pathlib import Path

    from stnet.inference import run_infer
    from stnet.runners import load_exported

    if rest:
        raise UserError(f"unexpected arguments: {' '.join(rest)}")
    runner = load_exported(args.model, args.threads, trust=args.trust_model, backend=args.backend)
    out = Path(args.out) if args.out else Path(args.model).parent
    report = run_infer(
        runner,
        args.dataset_path,
        split=args.split,
        clips=args.clips,
        crops=args.crops,
        batch_size=args.batch,
        workers=args.workers,
        out_dir=out,
        model_name=args.model,
        skip_unreadable=args.skip_unreadable,
        log=_say,
    )
    if args.json:
        print(json.dumps(report.summary))
    else:
        for line in report.lines:
            print(line)
    if report.report_error:
        print(f"stnet: error: the reports were not written: {report.report_error}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"written to {report.out_dir / 'acc.log'} and infer.json")
    return 0


def cmd_predict(args: argparse.Namespace, rest: Sequence[str]) -> int:
    import json

    from stnet.inference import open_model, predict

    outputs = _check_predict_outputs(args)
    runner = open_model(
        args.model,
        args.checkpoint,
        config=args.config,
        overrides=rest,
        classes_file=args.classes,
        threads=args.threads,
        trust_model=args.trust_model,
        backend=args.backend,
    )
    if args.live:
        return _predict_live(args, runner)
    if args.timeline:
        return _predict_timeline(args, runner, outputs)
    _say(runner.describe())
    failed = 0
    views = {"topk": args.topk, "clips": args.clips, "crops": args.crops}
    for pred in predict(runner, args.videos, **views, strict=args.strict):
        if pred.error is not None:
            failed += 1
            print(f"stnet: error: {pred.error}", file=sys.stderr)
        elif pred.warning is not None:
            print(f"stnet: warning: {pred.warning}", file=sys.stderr)
        if args.json:
            print(json.dumps(pred.to_json()), flush=True)
        elif pred.error is None:
            print(pred.line(), flush=True)
        if args.out_video and pred.error is None:
            _write_out_video(args, pred.video, lambda _t, top=pred.top: [(n, p) for n, _i, p in top or []])
    if failed:
        print(f"stnet: {failed} of the videos could not be read", file=sys.stderr)
    return 1 if failed else 0


_TIMELINE_ONLY = ("window", "stride", "threshold", "smooth", "csv", "plot")


def _check_predict_outputs(args: argparse.Namespace) -> list[str]:
    """Check the flag combination and the output files of ``predict`` before any work: every output
    is a new path that is none of the inputs; --plot and --out-video draw one video."""
    from pathlib import Path

    from stnet.fileio import refuse_overwriting_inputs

    given = [f"--{name.replace('_', '-')}" for name in _TIMELINE_ONLY if getattr(args, name) is not None]
    if given and not (args.timeline or args.live):
        raise UserError(f"{', '.join(given)} go with --timeline (or --live)")
    if args.live and (args.csv or args.plot or args.out_video):
        raise UserError("--live prints its predictions; --csv, --plot and --out-video go with a file")
    if args.camera is not None:
        if args.videos:
            raise UserError("give a SOURCE or --camera N, not both")
        if not args.live:
            raise UserError("--camera N goes with --live")
    elif not args.videos:
        raise UserError("give a video file or folder (with --live: a file, URL, /dev/videoN or -)")
    if args.live and len(args.videos) > 1:
        raise UserError(f"--live reads one source, not {len(args.videos)}")
    if args.out_size and not args.out_video:
        raise UserError("--out-size goes with --out-video")
    outputs = [o for o in (args.csv, args.plot, args.out_video) if o]
    if args.plot and not args.plot.lower().endswith(".png"):
        raise UserError(f"--plot writes a PNG: give a FILE.png, not {args.plot}")
    if args.out_video:
        from stnet.annotate import check_out_video, parse_size

        check_out_video(args.out_video)
        if args.out_size:
            parse_size(args.out_size)
    if (args.plot or args.out_video) and not args.live:
        from stnet.inference import find_videos

        videos = list(find_videos(args.videos))
        if len(videos) != 1:
            flag = "--plot" if args.plot else "--out-video"
            raise UserError(f"{flag} draws one video; give one video file, not {len(videos)}")
    if len({Path(o).resolve() for o in outputs}) < len(outputs):
        raise UserError("--csv, --plot and --out-video must be different files")
    inputs = [p for p in (*args.videos, args.model, args.checkpoint, args.classes) if p and p != "-"]
    refuse_overwriting_inputs(outputs, inputs)
    return outputs


def _write_out_video(args: argparse.Namespace, video: typing.Any, labels_at: typing.Any) -> None:
    from stnet.annotate import parse_size, write_annotated

    size = parse_size(args.out_size) if args.out_size else None
    count = write_annotated(video, args.out_video, labels_at, out_size=size)
    print(f"wrote {args.out_video}: {count} annotated frames", file=sys.stderr)


def _predict_timeline(args: argparse.Namespace, runner: typing.Any, outputs: list[str]) -> int:
    import json

    from stnet import timeline as tl
    from stnet.inference import find_videos, top_classes

    names = runner.info.class_names
    k = max(1, min(args.topk, runner.info.num_classes))
    failed = 0
    rows: list[tuple[typing.Any, ...]] = []
    for video in find_videos(args.videos):
        try:
            if not video.is_file():
                raise StnetError(
                    f"{video}: " + ("no video found in this folder" if video.is_dir() else "no such file")
                )
            result = tl.timeline(
                runner, video, window_s=args.window, stride_s=args.stride, clips=args.clips, crops=args.crops
            )
        except StnetError as e:
            failed += 1
            print(f"stnet: error: {e}", file=sys.stderr)
            continue
        if result.warning:
            print(f"stnet: warning: {result.warning}", file=sys.stderr)
        threshold = tl.DEFAULT_THRESHOLD if args.threshold is None else args.threshold
        result.segments = tl.segments(
            result.windows,
            names,
            result.duration,
            threshold=threshold,
            smoothing=args.smooth or 1,
            mode=args.smooth_mode,
        )
        if args.json:
            print(json.dumps(result.to_json(names, k)), flush=True)
        else:
            print("\n".join(tl.table_lines(result)), flush=True)
        if args.csv:
            rows += tl.csv_rows(result, names, k)
        if args.plot:
            from stnet.plots import plot_timeline

            plot_timeline(
                [(w.start + w.end) / 2 for w in result.windows],
                tl.np.stack([w.probs for w in result.windows]),
                names,
                [(s.index, s.start, s.end) for s in result.segments],
                result.duration,
                args.plot,
                threshold=threshold,
                title=f"{video.name}: {len(result.windows)} windows",
            )
            print(f"wrote {args.plot}", file=sys.stderr)
        if args.out_video:
            from stnet.annotate import labels_of_windows

            tops = [[(n, p) for n, _i, p in top_classes(w.probs, names, k)] for w in result.windows]
            bounds = tl.window_bounds(result.windows, result.duration)
            _write_out_video(args, video, labels_of_windows(bounds, tops))
    if args.csv:
        tl.write_csv(args.csv, rows)
        print(f"wrote {args.csv}", file=sys.stderr)
    if failed:
        print(f"stnet: {failed} of the videos could not be read", file=sys.stderr)
    return 1 if failed else 0


def _predict_live(args: argparse.Namespace, runner: typing.Any) -> int:
    import json

    from stnet.live import live, source_name
    from stnet.timeline import DEFAULT_THRESHOLD

    source = source_name(args.videos[0] if args.videos else None, args.camera)

    def emit(prediction: typing.Any) -> None:
        print(json.dumps(prediction.to_json()) if args.json else prediction.line(), flush=True)

    summary = live(
        runner,
        source,
        emit,
        window_s=args.window,
        stride_s=args.stride,
        topk=args.topk,
        clips=args.clips,
        crops=args.crops,
        threshold=DEFAULT_THRESHOLD if args.threshold is None else args.threshold,
        smoothing=args.smooth or 1,
        mode=args.smooth_mode,
    )
    if summary.ended is not None:
        print(json.dumps(summary.ended_json()) if args.json else summary.ended_line(), flush=True)
    if summary.error:
        print(f"stnet: error: {source}: {summary.error}", file=sys.stderr)
    print(f"stnet: {summary.line()}", file=sys.stderr)
    return 1 if summary.error else 0


def _say(message: str) -> None:
    """A note on how the command runs, e.g. the backend and why (stderr: stdout carries the results)."""
    print(f"stnet: {message}", file=sys.stderr)


def _add_backend_arg(p: argparse.ArgumentParser) -> None:
    from stnet.runners import BACKENDS

    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="runtime: auto (fastest here, printed with why: ONNX Runtime's CUDA/TensorRT providers on a "
        "GPU, OpenVINO bf16 on AMX/AVX-512 BF16 CPUs where installed, else ONNX Runtime), onnxruntime, "
        "openvino (pip install stnet[openvino]) for .onnx; torch for checkpoints and trusted .pt2/.ts",
    )


def _add_views_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clips", type=int_arg(1), default=1, help="temporal clips per video (default 1)")
    p.add_argument(
        "--crops", type=int, choices=(1, 3, 10), default=1, help="spatial crops per clip (default 1)"
    )


def _add_trust_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-model",
        "--trust_model",
        dest="trust_model",
        action="store_true",
        help="allow a .pt2 or .ts model: loading those PyTorch formats can run code the file carries, so "
        "use it only for files from a source you trust (.onnx models are always safe and need no flag)",
    )


def _add_skip_unreadable_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--skip_unreadable",
        action="store_true",
        help="leave videos that cannot be read out of the accuracies (default: each counts as a miss)",
    )


def _add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "--config_path", dest="config", default=None, help=CONFIG_HELP)


def _add_timeline_args(p: argparse.ArgumentParser) -> None:
    """predict's --timeline, --out-video and --live flags."""
    g = p.add_argument_group("timelines (--timeline), annotated videos (--out-video), live sources (--live)")
    g.add_argument("--timeline", action="store_true", help="classify a sliding window; merge into segments")
    seconds = float_arg(0, low_open=True)
    g.add_argument(
        "--window",
        type=seconds,
        default=None,
        help="window length in seconds (default: the frames one "
        "clip spans, T*2N for ucf101 or T*N for kinetics400, at the video's frame rate)",
    )
    g.add_argument("--stride", type=seconds, default=None, help="seconds between windows (default window/2)")
    g.add_argument(
        "--threshold", type=float_arg(0, 1), default=None, help="least probability of a segment (default 0.5)"
    )
    g.add_argument("--smooth", type=int_arg(1), default=None, help="smooth over K windows (default 1: none)")
    g.add_argument("--smooth-mode", choices=("median", "mean"), default="median", help="(default median)")
    g.add_argument("--csv", default=None, metavar="FILE", help="write every window's top-k and the segments")
    g.add_argument("--plot", default=None, metavar="FILE.png", help="draw the timeline (one video)")
    g.add_argument(
        "--out-video",
        default=None,
        metavar="FILE",
        help="write a copy (.mp4 H.264 or .gif) with the labels "
        "drawn on every frame (one video; with --timeline the labels follow it)",
    )
    g.add_argument(
        "--out-size", default=None, metavar="WxH", help="--out-video's frame size (default the input's)"
    )
    g.add_argument(
        "--live",
        action="store_true",
        help="SOURCE is a file, http(s)/rtsp/rtmp URL, /dev/videoN or - (stdin): "
        "print a prediction every --stride seconds as frames arrive, until it ends or Ctrl-C",
    )
    g.add_argument("--camera", type=int_arg(0), default=None, metavar="N", help="--live from /dev/videoN")


class OneLineErrors(argparse.ArgumentParser):
    """An argument parser whose errors (a bad option value, a missing option) are a ConfigError, so
    that they reach the user as one ``stnet: error:`` line with exit code 2; sub-parsers inherit it."""

    def error(self, message: str) -> typing.NoReturn:
        command = self.prog.removeprefix("stnet").strip()
        where = f"{command}: " if command else ""
        raise ConfigError(f"{where}{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="stnet",
        description="StNet video action recognition: prepare data, train, evaluate, export, predict.",
        epilog="Run `stnet COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"stnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("version", help="print the stnet, torch and python versions")
    p.set_defaults(func=cmd_version)

    p = sub.add_parser(
        "config",
        help="print the resolved configuration",
        description="Print the configuration a run would use: defaults, then the YAML file, then --key value "
        "overrides. Every key below is also a --key flag.",
    )
    _add_config_arg(p)
    p.add_argument(
        "--model-summary",
        "--model_summary",
        dest="model_summary",
        action="store_true",
        help="also build the model and print its parameters per block",
    )
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "convert",
        help="convert weights (torchvision, MindSpore .ckpt, ...) to stnet .safetensors",
        description="Read any supported weight file (PyTorch .pth/.pt state dict or checkpoint, "
        ".safetensors, "
        "MindSpore .ckpt of the official ResNet-50 or of a reference StNet) and write stnet-named "
        ".safetensors; optimizer state and counters are dropped.",
    )
    p.add_argument("input", help="weight file to read")
    p.add_argument("output", help="the .safetensors file to write")
    p.set_defaults(func=cmd_convert)

    from stnet.bench import register_cli as register_bench
    from stnet.datacheck import register_cli as register_data
    from stnet.demo import register_cli as register_demo
    from stnet.prepare import SPLITS
    from stnet.prepare import register_cli as register_prepare
    from stnet.synth import register_cli as register_synth

    register_synth(sub)
    register_prepare(sub)
    register_data(sub)

    p = sub.add_parser(
        "train",
        help="train StNet on a prepared dataset (torchrun -m stnet train ... for several processes)",
        description="Train on --dataset_path (a folder from `stnet prepare`, or the reference's Kinetics "
        "pkl / UCF101 frame layouts). Checkpoints, metrics.jsonl, TensorBoard logs and curves.png go to "
        "--output_dir. Every config key is a --key value flag.",
    )
    _add_config_arg(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on a split: top-1/top-5/mean-class, per-class CSV, confusion matrix",
        description="Evaluate a checkpoint (stnet training checkpoint, stnet/safetensors weights, or a "
        "reference MindSpore StNet .ckpt with --xception full --stem_pool same) on every video of a split. "
        "Scores are softmax-averaged over the clips x crops views of each video.",
    )
    _add_config_arg(p)
    p.add_argument("--checkpoint", "--resume", dest="checkpoint", required=True, help="checkpoint or weights")
    p.add_argument(
        "--split", choices=SPLITS, default="val", help="split to evaluate: the list file read (default val)"
    )
    _add_views_args(p)
    p.add_argument("--out", default=None, help="report directory (default: beside the checkpoint)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    _add_skip_unreadable_arg(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX (or torch.export .pt2 / TorchScript), verified against PyTorch",
        description="Export a checkpoint to one self-describing file: class names, T, N, input size, "
        "mean/std and the sampling recipe are embedded, so `stnet infer`/`stnet predict` (or your own "
        "ONNX Runtime code) need nothing else. The export is run on random clips and compared with "
        "PyTorch before it is written. Training checkpoints bring their own settings; for other weight "
        "files give the model with --config/--key value (e.g. a reference MindSpore StNet: --depth 50 "
        "--xception full --stem_pool same --class_num 400).",
    )
    _add_config_arg(p)
    p.add_argument("--checkpoint", required=True, help="checkpoint or weights to export")
    p.add_argument("--out", required=True, help="output file: .onnx, .pt2 or .ts")
    p.add_argument(
        "--format",
        choices=("onnx", "pt2", "torchscript"),
        default=None,
        help="onnx (ONNX Runtime), pt2 (torch.export) or torchscript (libtorch/C++); default: from --out",
    )
    p.add_argument("--T", type=int_arg(1), default=None, help="segments per clip (default: as trained)")
    p.add_argument(
        "--size",
        type=int_arg(1),
        default=None,
        help="crop size (default: as trained; the resize scales along)",
    )
    p.add_argument("--classes", default=None, help="class names file ('<name> <index>' or one per line)")
    p.add_argument(
        "--tolerance",
        type=float_arg(0),
        default=1e-4,
        help="largest allowed |logit difference| (default 1e-4)",
    )
    p.add_argument(
        "--quantize",
        choices=("int8",),
        default=None,
        help="ONNX only: int8 weights and activations calibrated on real clips (2-3x faster on VNNI CPUs)",
    )
    p.add_argument(
        "--calibration",
        default=None,
        help="prepared dataset to calibrate int8 on (default: the checkpoint's dataset_path)",
    )
    p.add_argument("--calibration_split", default="train", help="its split (default train)")
    p.add_argument(
        "--calibration_clips", type=int_arg(1), default=32, help="clips to calibrate on (default 32)"
    )
    p.add_argument(
        "--min_agreement",
        type=float_arg(0, 1),
        default=0.9,
        help="int8: least fraction of calibration clips whose top-1 class must match fp32 (default 0.9)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "infer",
        help="run an exported model over a prepared split: accuracy (reference acc.log line) and latency",
        description="Run a model from `stnet export` with ONNX Runtime (or PyTorch for .pt2/.ts, with "
        "--trust-model) over every video of a split, with the same sampling as `stnet eval`. Prints and "
        "writes to OUT/acc.log the reference's 'top1_correct=N, tot=M, acc=XX.XX%' line, top-5, and "
        "latency per clip. The format comes from the file's name (.onnx, .pt2, .ts) and must match its "
        "contents.",
    )
    p.add_argument(
        "--model", required=True, help="model file from stnet export (.onnx; .pt2/.ts with --trust-model)"
    )
    p.add_argument("--dataset_path", "--dataset-path", required=True, help="prepared dataset folder")
    p.add_argument("--split", choices=SPLITS, default="val", help="split to run (default val)")
    _add_views_args(p)
    p.add_argument(
        "--batch", type=int_arg(1), default=1, help="videos per model call (default 1, as the reference)"
    )
    p.add_argument(
        "--threads", type=int_arg(1), default=None, help="threads of the runtime (default: all cores)"
    )
    p.add_argument("--workers", type=workers_arg(), default=2, help="data loading processes (default 2)")
    p.add_argument("--out", default=None, help="folder for acc.log, infer.json (default: the model's)")
    _add_backend_arg(p)
    _add_trust_arg(p)
    _add_skip_unreadable_arg(p)
    p.add_argument("--json", action="store_true", help="print infer.json's numbers as one JSON object")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser(
        "predict",
        help="classify video files: top-k class names with probabilities",
        description="Decode each video (mp4, avi, mkv, webm, mov, ...; a folder is searched recursively), "
        "sample it with the eval recipe and print its top-k classes. A file that cannot be read is "
        "reported and the others go on; the exit status is 1 if any failed.",
    )
    _add_config_arg(p)
    p.add_argument(
        "videos", nargs="*", metavar="VIDEO_OR_DIR", help="video files or folders (--live: one SOURCE)"
    )
    p.add_argument(
        "--model", default=None, help="model file from stnet export (.onnx; .pt2/.ts with --trust-model)"
    )
    p.add_argument("--checkpoint", default=None, help="or: a checkpoint or weights file (runs in PyTorch)")
    p.add_argument("--classes", default=None, help="class names file, for weights that do not carry them")
    p.add_argument("--topk", type=int_arg(1), default=5, help="classes to show per video (default 5)")
    _add_views_args(p)
    p.add_argument(
        "--threads", type=int_arg(1), default=None, help="threads of the runtime (default: all cores)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per video (JSON Lines)")
    _add_backend_arg(p)
    _add_trust_arg(p)
    p.add_argument(
        "--strict",
        action="store_true",
        help="a video that decodes fewer frames than it announces (truncated) is an error, not a warning",
    )
    _add_timeline_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "check",
        help="check the installation: build the configured model and time a training step",
        description="Build the model of the config, optionally load weights into it, and run a forward and "
        "backward pass on a random clip of the configured shape. Any --key value override applies.",
    )
    _add_config_arg(p)
    p.add_argument("--weights", default=None, help="weight file to load first (any supported format)")
    p.add_argument("--batch", type=int_arg(1), default=1, help="clips in the random batch (default 1)")
    p.set_defaults(func=cmd_check)

    from stnet.explain import register_cli as register_explain
    from stnet.features import register_cli as register_features

    register_explain(sub)
    register_features(sub)
    register_demo(sub)
    register_bench(sub)
    return parser


def split_config_flags(command: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split a command's arguments into its own (options, with their values, and positionals) and the
    ``--key value`` config flags it does not know, so both may come in any order: in
    ``predict VIDEO --checkpoint C --T 8 OTHER``, 8 is T's value and OTHER a video."""
    known = {s: a for a in command._actions for s in a.option_strings}
    own: list[str] = []
    config: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, _ = arg.partition("=")
        takes_value = False
        if arg == "--":
            own += argv[i:]
            break
        if arg.startswith("--") and name not in known:
            target = config
            takes_value = True
        else:
            target = own
            action = known.get(name)
            takes_value = action is not None and action.nargs not in (0, "?", "*")
        target.append(arg)
        if takes_value and not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            target.append(argv[i + 1])
            i += 1
        i += 1
    return own, config


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The command's arguments and its config flags (``--key value``, for the config)."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    command = commands.get(argv[0]) if argv else None
    nested = command is not None and any(isinstance(a, argparse._SubParsersAction) for a in command._actions)
    if command is None or nested:  # `prepare DATASET ...` parses its own sub-commands
        return parser.parse_known_args(argv)
    own, config = split_config_flags(command, argv[1:])
    return command.parse_intermixed_args(own, argparse.Namespace(command=argv[0])), config


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, rest = _parse(parser, list(sys.argv[1:] if argv is None else argv))
        if args.command is None:
            parser.print_help()
            return 0
        func: Callable[[argparse.Namespace, Sequence[str]], int] = args.func
        return func(args, rest)
    except StnetError as e:
        print(f"stnet: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"stnet: error: {os_error_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stnet: interrupted", file=sys.stderr)
        return 130
