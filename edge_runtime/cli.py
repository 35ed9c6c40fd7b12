"""The ``edgeclf`` command: a thin typer shell over the Python API.

The runtime's own commands (``eval``, ``predict``, ``bench``) are defined here; the workstation's
(``train``, ``export``, ``demo``) are added by ``edgeclf.train`` and ``edgeclf.export`` through the
``edgeclf.commands`` entry points (see ``plugins``), so this module imports neither. Importing it
must not import TensorFlow: ``edgeclf predict`` and ``edgeclf --help`` start fast on a device.
"""

from __future__ import annotations

import errno
import signal
import sys
from pathlib import Path
from typing import Optional

import typer

from edgeclf import __version__
from edgeclf.errors import EdgeclfError, safe_text
from edgeclf.plugins import command_name, load_commands

app = typer.Typer(
    name="edgeclf",
    help="Train an image classifier on a folder of photos, export it to (int8) ONNX, and run it live on the edge.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"edgeclf {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
) -> None:
    pass


# ---------------------------------------------------------------------------------------------- eval
@app.command("eval")
def eval_(
    model: Path = typer.Argument(..., help="A run folder, a .keras file, or an .onnx file."),
    data_dir: Optional[Path] = typer.Argument(None, help="Labelled images: one sub-folder per class (default, for a run folder: the run's own validation split, as run.json lists it)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per inference batch."),
    unknown: Optional[Path] = typer.Option(None, "--unknown", help="Photos of none of the classes (any layout): also report how many are answered 'unknown', how many in-class photos are, AUROC and the false-accept rate at 95% in-class acceptance (an .onnx or .tflite model with the unknown score)."),
    unknown_threshold: Optional[float] = typer.Option(None, "--unknown-threshold", help="Judge at this unknown-score threshold instead of the model's calibrated one."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="With --unknown: the PNG of both score distributions (default: MODEL.unknown.png beside the model)."),
    force: bool = typer.Option(False, "--force", help="Let --plot replace an existing file that edgeclf did not write."),
) -> None:
    """Accuracy, per-class precision and recall, and the confusion matrix of MODEL on DATA_DIR (or on a run's validation split)."""
    from edgeclf.evaluate import run_eval

    run_eval(model, data_dir, json_out=json_out, batch_size=batch_size, unknown_dir=unknown,
             unknown_threshold=unknown_threshold, plot=plot, force=force)


# ------------------------------------------------------------------------------------------- predict
@app.command()
def predict(
    model: Path = typer.Argument(..., help="An .onnx (or .tflite) model exported by edgeclf (run as given), or a run folder (or export folder) whose export exists: its int8 model, its fp16 one on a GPU provider."),
    source: str = typer.Argument(..., help="Image, folder, glob, video, camera index, /dev/videoN, rtsp:// or http:// URL, GStreamer pipeline."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per line on stdout (source, frame, label, index, score, probs, latency_ms, unknown, unknown_score)."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Also write the results to this CSV file."),
    top: int = typer.Option(1, "--top", help="Show the K most probable classes."),
    show: bool = typer.Option(False, "--show", help="Show the frames with label, score and FPS in a window (needs a display)."),
    save: Optional[Path] = typer.Option(None, "--save", help="Write the annotated frames to this video (.mp4, .avi)."),
    smooth: bool = typer.Option(False, "--smooth", help="Average probabilities over frames (EMA) so a live label does not flicker."),
    smooth_alpha: float = typer.Option(0.3, "--smooth-alpha", help="EMA weight of the newest frame with --smooth (0-1]."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Images per inference call for folders and videos (default: those already decoded, up to 8 on the CPU within an eighth of the free memory; 1 on a GPU or for a graph fixed at one image)."),
    every: int = typer.Option(1, "--every", help="Classify every N-th frame or file only."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop after N frames or images."),
    provider: str = typer.Option("auto", "--provider", help="auto (TensorRT, CUDA, CPU: the first installed), cpu, cuda or tensorrt."),
    engine: str = typer.Option("auto", "--engine", help="onnxruntime, litert (a folder's model.int8.tflite, through ai-edge-litert), openvino (the ONNX model on OpenVINO), or auto: for a folder, the engine and threads `edgeclf bench FOLDER --engines` chose on this machine, else onnxruntime."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU inference threads (default: adapts, running on the usable cores (at most 4) while they are free and on one when other work holds them)."),
    device_id: int = typer.Option(0, "--device-id", help="GPU to use with cuda/tensorrt."),
    strict: bool = typer.Option(False, "--strict", help="Fail if the provider is missing or any file is skipped."),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for a camera or stream to give its first frame."),
    serve: Optional[str] = typer.Option(None, "--serve", metavar="[HOST:]PORT", help="Also show the live annotated video and predictions in a browser at http://HOST:PORT/ (host 127.0.0.1 unless given; 0.0.0.0 opens it to the network). Per-frame lines then go to stdout only with --json."),
    loop: bool = typer.Option(False, "--loop", help="Video files: start again at the end (a file standing in for a camera)."),
    realtime: Optional[bool] = typer.Option(None, "--realtime/--no-realtime", help="Video files: play at their own frame rate, skipping frames the model cannot keep up with, like a camera (default: on with --serve)."),
    allow_host: list[str] = typer.Option([], "--allow-host", metavar="NAME", help="--serve: also answer requests addressed to this host name (repeatable); by default only IP addresses, localhost and this machine's name."),
    force: bool = typer.Option(False, "--force", help="Let --csv/--save replace an existing file that edgeclf did not write (never an input)."),
    unknown: bool = typer.Option(True, "--unknown/--no-unknown", help="Answer 'unknown' for a frame that is none of the classes: too far from the training photos (the model's unknown score above the threshold its export calibrated) or, with --threshold, too unsure."),
    unknown_threshold: Optional[float] = typer.Option(None, "--unknown-threshold", help="The unknown score above which a frame is 'unknown' (default: the model's calibrated one; higher rejects less; see edgeclf eval --unknown)."),
    threshold: list[str] = typer.Option([], "--threshold", metavar="CLASS=P", help="Also 'unknown' when CLASS is the top class with a probability below P (repeatable)."),
    collect: Optional[Path] = typer.Option(None, "--collect", metavar="DIR", help="Keep the frames worth a look (unknown, top two classes close, or, on a stream, the label changed) as JPEG + JSON in DIR/<label>/, ready to sort and train on."),
    collect_margin: float = typer.Option(0.2, "--collect-margin", help="--collect: keep a frame whose top two probabilities are closer than this."),
    collect_interval: float = typer.Option(1.0, "--collect-interval", help="--collect: at most one frame per this many seconds from a video, camera or stream."),
    collect_max: int = typer.Option(1000, "--collect-max", help="--collect: at most this many frames in DIR (the oldest collected go first; nothing else is deleted)."),
    collect_max_mb: float = typer.Option(500.0, "--collect-max-mb", help="--collect: at most this many megabytes of collected frames in DIR."),
) -> None:
    """Classify images, folders, videos, cameras and streams with an ONNX model (no TensorFlow)."""
    options = dict(locals())  # the parameters above are PredictOptions' fields, by name
    from edgeclf.model.unknown import parse_class_thresholds
    from edgeclf.predict.loop import run_predict
    from edgeclf.predict.options import PredictOptions

    options["class_thresholds"] = parse_class_thresholds(options.pop("threshold"))

    summary = run_predict(PredictOptions(**options))
    if summary.interrupted:
        raise typer.Exit(130)


# --------------------------------------------------------------------------------------------- bench
@app.command()
def bench(
    model: Path = typer.Argument(..., help="An .onnx or .tflite model (with --engines: an export or run folder)."),
    runs: int = typer.Option(100, "--runs", help="Timed runs per thread count and batch size (with --source: frames at most)."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed runs before each measurement."),
    batch: str = typer.Option("1", "--batch", help="Batch sizes, comma-separated, e.g. 1,4,8."),
    threads: Optional[str] = typer.Option(None, "--threads", help="onnxruntime intra-op thread counts, e.g. 1,2,4 (default: adaptive, as edgeclf predict: the cores (at most 4) while free, one when other work holds them)."),
    provider: str = typer.Option("auto", "--provider", help="auto (TensorRT, CUDA, CPU: the first installed), cpu, cuda or tensorrt."),
    source: Optional[Path] = typer.Option(None, "--source", help="A video or image folder: also time the whole pipeline per stage."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the charts to this PNG file."),
    force: bool = typer.Option(False, "--force", help="Let --plot replace an existing file that edgeclf did not write."),
    engines: bool = typer.Option(False, "--engines", help="MODEL is an export (or run) folder: time its int8 model on every engine installed (onnxruntime; OpenVINO; LiteRT for model.int8.tflite) at 1 thread and on the usable cores (at most 4), side by side, and record its choice (the fastest at p50, but onnxruntime unless another is 5% faster; of ways within 5% of the fastest, the shortest p99) in the folder's engine.json for `predict --engine auto`."),
) -> None:
    """Benchmark latency and throughput of an ONNX (or .tflite) model on this device."""
    if engines:
        from edgeclf.bench.engines import run_engines

        run_engines(model, runs, warmup, json_out, batch=batch, threads=threads, source=source, plot=plot, provider=provider)
        return
    from edgeclf.bench.run import run_bench

    run_bench(model, runs, warmup, batch, threads, provider, source, json_out, plot, force=force)


# ------------------------------------------------------------------------------ add-class, remove-class
@app.command("add-class")
def add_class(
    model: Path = typer.Argument(..., help="An exported .onnx model, or an export folder (its fp32 and int8 models both change)."),
    name: str = typer.Argument(..., help="The new class's name."),
    source: str = typer.Argument(..., help="A folder of its photos, or a camera, video or stream to take --count frames from."),
    out: Path = typer.Option(..., "--out", "-o", help="New folder for the enlarged model (the original is never changed)."),
    count: int = typer.Option(20, "--count", help="Frames to take from a camera, video or stream (a folder: all its photos, up to 1000)."),
    every: int = typer.Option(1, "--every", help="From a camera or video: take every N-th frame (varied views learn better)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Teach an exported model a new class from a few photos, on the device, in seconds (no TensorFlow)."""
    from edgeclf.learn import run_add_class

    run_add_class(model, name, source, out, count=count, every=every, json_out=json_out)


@app.command("remove-class")
def remove_class(
    model: Path = typer.Argument(..., help="An exported .onnx model, or an export folder."),
    name: str = typer.Argument(..., help="The class to remove."),
    out: Path = typer.Option(..., "--out", "-o", help="New folder for the result (the original is never changed)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Remove a class from an exported model (undoes add-class; works for trained classes too)."""
    from edgeclf.learn import run_remove_class

    run_remove_class(model, name, out, json_out=json_out)


# --------------------------------------------------------------------------------------- serve, service
@app.command()
def serve(
    config: Path = typer.Argument(..., help="The service's config file (TOML; every key in docs/serve.md)."),
    check: bool = typer.Option(False, "--check", help="Check the config (and that the model loads), then exit."),
    json_out: bool = typer.Option(False, "--json", help="With --check: print the checked config as one JSON object (no secrets)."),
) -> None:
    """Run a model on one or more sources as a service: state changes to MQTT / Home Assistant and webhooks, an HTTP API, systemd's watchdog."""
    from edgeclf.service.commands import run_serve

    raise typer.Exit(run_serve(config, check=check, json_out=json_out))


service_app = typer.Typer(help="Install edgeclf serve as a systemd service (or remove it).", no_args_is_help=True)
app.add_typer(service_app, name="service")


@service_app.command("install")
def service_install(
    config: Path = typer.Argument(..., help="The service's config file (checked first)."),
    user: bool = typer.Option(False, "--user", help="A unit of your own user's systemd (no root; fewer sandboxing options)."),
    name: Optional[str] = typer.Option(None, "--name", help="The unit's name (default: edgeclf-<config file name>)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing unit of that name written by edgeclf."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object: the unit written."),
) -> None:
    """Write a systemd unit (Type=notify, watchdog, restart on failure, sandboxed) that runs edgeclf serve CONFIG."""
    from edgeclf.service.commands import run_install

    run_install(config, user=user, force=force, name=name, json_out=json_out)


@service_app.command("uninstall")
def service_uninstall(
    what: str = typer.Argument(..., help="The unit's name, or the config file it was installed from."),
    user: bool = typer.Option(False, "--user", help="A unit of your own user's systemd."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object: the unit removed."),
) -> None:
    """Remove a unit written by 'edgeclf service install'."""
    from edgeclf.service.commands import run_uninstall

    run_uninstall(what, user=user, json_out=json_out)


# ----------------------------------------------------------------------------- the workstation's commands
load_commands(app)
WORKFLOW = ("train", "eval", "export", "predict", "serve", "add-class", "remove-class", "bench", "demo")  # --help lists them in the order of the work


def _order(info) -> int:
    name = command_name(info)
    return WORKFLOW.index(name) if name in WORKFLOW else len(WORKFLOW)


app.registered_commands.sort(key=_order)  # stable: other plugins' commands keep their order, last


def _click_exceptions():
    try:  # typer >= 0.20 vendors click
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2, no traceback."""
    ce = _click_exceptions()
    # SIGTERM (kill, systemd stopping a service) stops a command as Ctrl-C does: outputs flushed,
    # files renamed into place, ports released. SIGINT is installed explicitly too: a shell starts
    # background jobs (`nohup edgeclf predict ... &`) with SIGINT ignored, and Python then leaves
    # it ignored, so Ctrl-C or `kill -INT` would do nothing.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = app(standalone_mode=False)
    except ce.NoArgsIsHelpError as e:
        e.show()
        sys.exit(0)
    except ce.UsageError as e:  # a missing argument, a value of the wrong type, an unknown option
        where = f"edgeclf {e.ctx.info_name} --help" if e.ctx is not None and e.ctx.parent is not None else "edgeclf --help"
        typer.echo(f"edgeclf: error: {safe_text(e.format_message())} (see '{where}')", err=True)
        sys.exit(2)
    except ce.ClickException as e:
        typer.echo(f"edgeclf: error: {safe_text(e.format_message())}", err=True)
        sys.exit(e.exit_code)
    except EdgeclfError as e:
        typer.echo(f"edgeclf: error: {safe_text(e)}", err=True)  # paths in it may hold control characters
        sys.exit(e.exit_code)
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            raise
        # A path given on the command line that the system refuses to look up: pathlib's checks
        # (exists, is_dir) raise instead of answering, in every command, so it is said here once.
        typer.echo(f"edgeclf: error: {safe_text(e.filename)}: path longer than this system allows ({e.strerror})", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("edgeclf: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
