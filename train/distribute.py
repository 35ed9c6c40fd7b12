"""Which devices training runs on: one, several in step, or several machines.

With two or more GPUs visible, each batch is split across them and the gradients are summed
(synchronous data parallelism) under ``tf.distribute.MirroredStrategy``; the batch size stays the
global one. Several logical CPU devices (made with ``tf.config.set_logical_device_configuration``)
count the same way, which is how the tests exercise this path without a GPU.

Beyond one machine, ``TF_CONFIG`` (set by ``edgeclf train --worker-config``, or in the
environment) names the cluster and this process's task: training then runs under
``tf.distribute.MultiWorkerMirroredStrategy``, every worker running the same command. Only the
chief (task ``chief``, else ``worker`` 0) writes the run folder; the other workers write their
checkpoints and backups to ``<--out>/workertemp_<index>``, removed when the run completes
(Keras' multi-worker pattern). ``MultiWorkerBackup`` (keras.callbacks.BackupAndRestore) lets a
run whose workers were killed continue from its last finished epoch when every worker is
started again with the same command.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from edgeclf.errors import EdgeclfError, first_line

BACKUP_DIR = "backup"  # inside the folder a worker writes: the chief's --out, another worker's workertemp_<i>
_STATES = "edgeclf_states.json"  # the run's state (history, best epoch...) of the last two backups


# ------------------------------------------------------------------------------ the cluster (no TensorFlow)
@dataclass(frozen=True)
class Task:
    """This process's place in a multi-worker cluster (``TF_CONFIG``)."""

    type: str  # "worker" or "chief"
    index: int
    workers: int  # every task that trains: the chief (if named apart) and the workers
    chief_apart: bool = False  # the cluster names a "chief" task: worker 0 is then not the chief

    @property
    def is_chief(self) -> bool:
        return self.type == "chief" or (self.index == 0 and not self.chief_apart)

    def scratch(self, out: Path) -> Path:
        """Where a worker other than the chief writes: a folder of its own, removed at the end."""
        return Path(out) / f"workertemp_{self.index}"


def parse_worker_config(value: str) -> str:
    """``--worker-config``'s value (a JSON object, or a file holding one), checked, as TF_CONFIG's text."""
    text, where = value, "--worker-config"
    if not value.lstrip().startswith(("{", "[")):
        path = Path(value)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise EdgeclfError(f"{value}: --worker-config is neither a JSON object nor a readable file "
                               f"({e.strerror or first_line(e)})") from None
        except UnicodeDecodeError:
            raise EdgeclfError(f"{value}: --worker-config file is not UTF-8 text") from None
        where = f"{value}"
    config = _load(text, where)
    check_cluster(config, where)
    return json.dumps(config)


def _load(text: str, where: str) -> dict:
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise EdgeclfError(f"{where}: not valid JSON ({first_line(e)})") from None
    if not isinstance(config, dict):
        raise EdgeclfError(f"{where}: expected a JSON object {{\"cluster\": ..., \"task\": ...}}, got {type(config).__name__}")
    return config


def check_cluster(config: dict, where: str = "TF_CONFIG") -> Task:
    """The task ``config`` (TF_CONFIG's content) describes; a one-line EdgeclfError naming what is wrong."""
    cluster = config.get("cluster")
    if not isinstance(cluster, dict):
        raise EdgeclfError(f"{where}: no \"cluster\" object (e.g. {{\"worker\": [\"host1:12345\", \"host2:12345\"]}})")
    unknown = sorted(set(cluster) - {"worker", "chief"})
    if unknown:
        raise EdgeclfError(f"{where}: cluster.{unknown[0]} is not supported: multi-worker training takes "
                           "\"worker\" tasks (and at most one \"chief\")")
    workers = cluster.get("worker")
    if not isinstance(workers, list) or not workers:
        raise EdgeclfError(f"{where}: missing cluster.worker: a list of \"host:port\" addresses, one per worker")
    chiefs = cluster.get("chief", [])
    if not isinstance(chiefs, list) or len(chiefs) > 1:
        raise EdgeclfError(f"{where}: cluster.chief must be a list of one \"host:port\" address")
    for name, addresses in (("worker", workers), ("chief", chiefs)):
        for a in addresses:
            host, _, port = a.rpartition(":") if isinstance(a, str) else ("", "", "")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise EdgeclfError(f"{where}: cluster.{name} address {json.dumps(a)} is not \"host:port\"")
    all_addresses = workers + chiefs
    if len(set(all_addresses)) != len(all_addresses):
        raise EdgeclfError(f"{where}: an address appears twice in the cluster; each task needs its own host:port")
    task = config.get("task")
    if not isinstance(task, dict):
        raise EdgeclfError(f"{where}: no \"task\" object (e.g. {{\"type\": \"worker\", \"index\": 0}})")
    kind, index = task.get("type"), task.get("index")
    if kind not in ("worker", "chief") or (kind == "chief" and not chiefs):
        allowed = '"worker" or "chief"' if chiefs else '"worker"'
        raise EdgeclfError(f"{where}: task.type must be {allowed} (got {json.dumps(kind)})")
    size = len(workers) if kind == "worker" else 1
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < size:
        raise EdgeclfError(f"{where}: task index {json.dumps(index)} is out of range: cluster.{kind} has {size} "
                           f"address{'es' if size > 1 else ''} (index 0 to {size - 1})")
    return Task(kind, index, len(all_addresses), chief_apart=bool(chiefs))


def cluster_task() -> Task | None:
    """This process's task when ``TF_CONFIG`` names a cluster, else None (one process)."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    config = _load(text, "TF_CONFIG")
    if not config.get("cluster"):
        return None  # TensorFlow reads an empty cluster as "no cluster" too
    return check_cluster(config, "TF_CONFIG")


def is_chief() -> bool:
    """True for a one-process run and for the multi-worker chief: the process that writes --out."""
    task = cluster_task()
    return task is None or task.is_chief


def write_dir(out: Path) -> Path:
    """The folder this process writes its checkpoints to: --out, or a worker's own workertemp_<i> in it."""
    task = cluster_task()
    return Path(out) if task is None or task.is_chief else task.scratch(out)


def finish_worker(scratch: Path, state: dict, interrupted: bool) -> dict:
    """The end of a worker other than the chief: its workertemp_<i> folder goes (kept when
    interrupted: a restart continues from its backup), and --out too if that left it empty.
    Returns what it did, for the command to print; the chief writes the run's record."""
    task = cluster_task()
    if not interrupted:
        shutil.rmtree(scratch, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path(scratch).parent.rmdir()  # only when empty: on a shared disk it is the chief's run folder
    return {"worker": {"type": task.type, "index": task.index, "workers": task.workers}, "epochs_run": state["epoch"],
            "best": state["best"], "interrupted": interrupted}


# ------------------------------------------------------------------------------ strategies
def select_strategy():
    """MultiWorkerMirroredStrategy when TF_CONFIG names a cluster; else MirroredStrategy over every
    GPU when there are several (else over several logical CPUs), otherwise TensorFlow's default
    single-device strategy."""
    import tensorflow as tf

    if cluster_task() is not None:  # before anything else touches TensorFlow's runtime, as it requires
        return multi_worker_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    devices = gpus if len(gpus) > 1 else (cpus if not gpus and len(cpus) > 1 else [])
    if devices:
        return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    return tf.distribute.get_strategy()


def multi_worker_strategy():
    """MultiWorkerMirroredStrategy for TF_CONFIG's cluster, with Keras 3's use of it made to work.

    Keras 3 (checked with 3.15) calls ``strategy.reduce`` on a tuple of per-replica batches
    (building the model before fit) and with ``axis=0`` on per-replica scalars (the metrics);
    TensorFlow's multi-worker reduce takes neither (keras-team/keras#20585). This strategy's own
    ``reduce`` is wrapped to reduce each value of a structure, scalars over replicas: the same
    results MirroredStrategy gives. Nothing else is changed, and no other strategy."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    reduce = strategy.reduce

    def one(op, value, axis):
        local = tf.nest.flatten(strategy.experimental_local_results(value))
        if axis is not None and local and local[0].shape.rank == 0:
            axis = None
        return reduce(op, value, axis=axis)

    strategy.reduce = lambda op, value, axis=None: tf.nest.map_structure(lambda v: one(op, v, axis), value)
    return strategy


@contextlib.contextmanager
def distribution() -> Iterator[object]:
    """Make the selected strategy the current one for everything built inside (model, optimizer)."""
    import tensorflow as tf

    if tf.distribute.has_strategy():  # a caller already chose
        yield tf.distribute.get_strategy()
        return
    strategy = select_strategy()
    with strategy.scope():
        yield strategy


@contextlib.contextmanager
def peer_failures() -> Iterator[None]:
    """Under multi-worker, a worker that stopped (killed, crashed, unreachable) makes the others'
    collectives fail: one line that says how to continue, instead of TensorFlow's traceback."""
    if cluster_task() is None:
        yield
        return
    import tensorflow as tf

    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.DeadlineExceededError,
            tf.errors.AbortedError, tf.errors.InternalError) as e:
        raise EdgeclfError(f"multi-worker training stopped: a worker failed or became unreachable ({type(e).__name__}: {first_line(e, 100)}); "
                           "start every worker again with the same command to continue from the last backup") from None


def describe() -> dict:
    """The current strategy for run.json: its name, replica count and devices (and workers)."""
    import tensorflow as tf

    s = tf.distribute.get_strategy()
    if not tf.distribute.has_strategy():
        return {"strategy": "one device", "replicas": 1, "devices": []}
    devices = list(getattr(s.extended, "worker_devices", ()) or ())
    record = {"strategy": type(s).__name__, "replicas": int(s.num_replicas_in_sync), "devices": devices}
    task = cluster_task()
    if task is not None:  # TensorFlow's class is CollectiveAllReduceStrategy: named as the API names it
        record.update(strategy="MultiWorkerMirroredStrategy", workers=task.workers)
    return record


# ------------------------------------------------------------------------------ fault tolerance
def backup_state(folder: Path) -> dict | None:
    """The run's state (as in state.json) that matches the backup in ``folder``/backup, or None
    when there is no backup. The backup's epoch (Keras' training_metadata.json, written last)
    decides: of the two states kept, the one of that epoch."""
    backup = Path(folder) / BACKUP_DIR
    meta, states = backup / "training_metadata.json", backup / _STATES
    if not meta.is_file():
        return None
    try:
        epoch = json.loads(meta.read_text(encoding="utf-8"))["epoch"]
        kept = json.loads(states.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EdgeclfError(f"{backup}: unreadable backup ({first_line(e)}); remove it, or start over with --force") from None
    for state in kept if isinstance(kept, list) else []:
        if isinstance(state, dict) and state.get("epoch") == epoch:
            return state
    raise EdgeclfError(f"{backup}: the backup of epoch {epoch} has no matching run state; remove it, or start over with --force")


def remove_backup(folder: Path) -> None:
    shutil.rmtree(Path(folder) / BACKUP_DIR, ignore_errors=True)


def _save_backup(callback, state: dict, stage_index: int) -> None:
    """The run's state (the last two kept), then Keras' own backup files."""
    from edgeclf.outfiles import write_json

    os.makedirs(callback.backup_dir, exist_ok=True)
    path = Path(callback.backup_dir) / _STATES
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))[-1:]
    except (OSError, ValueError, TypeError, IndexError, KeyError):
        kept = []
    write_json(path, kept + [{**state, "stage": stage_index}])
    callback._save_model()


def _check_same_epoch(state: dict) -> None:
    """Every worker must restore the same epoch, since they take the same steps together."""
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    mine = tf.constant([state["epoch"]], tf.int64)
    epochs = strategy.gather(strategy.experimental_distribute_values_from_function(lambda _: mine), axis=0)
    epochs = sorted({int(e) for e in epochs.numpy()})
    if len(epochs) > 1:
        raise EdgeclfError(f"the workers' backups are of different epochs ({', '.join(map(str, epochs))}): "
                           f"they cannot continue together; remove {BACKUP_DIR}/ from every worker's folder "
                           "(or start over with --force)")


def multi_worker_backup(folder: Path, state: dict, stage_index: int, restore: bool):
    """keras.callbacks.BackupAndRestore for one stage of a multi-worker run (see MultiWorkerBackup)."""
    import keras

    class MultiWorkerBackup(keras.callbacks.BackupAndRestore):
        """BackupAndRestore (model and optimizer weights, epoch counter: Keras' own files, saved
        every epoch, the two last kept against a file damaged by a kill) plus the run's state
        (history, best epoch, early-stop counter), written before Keras' files so that the epoch
        Keras restores always has its state. ``restore``: load the backup when training starts
        (only the first stage trained after a restart); the workers check they all restore the
        same epoch, since they must take the same steps."""

        def __init__(self):
            super().__init__(str(Path(folder) / BACKUP_DIR), save_freq="epoch", double_checkpoint=True,
                             delete_checkpoint=False)  # removed by the trainer once the whole run is done

        def on_train_begin(self, logs=None):
            if restore:
                super().on_train_begin(logs)
                restored = self.model._initial_epoch or 0
                if restored != state["epoch"]:  # Keras fell back to the previous backup (a damaged file)
                    state.clear()
                    state.update(backup_state(folder))
            self._check_same_epoch()
            if restore and backup_state(folder).get("stage", stage_index) != stage_index:
                raise EdgeclfError(f"{self.backup_dir}: the backup was taken between two training stages and cannot be "
                                   "continued; start over with --force")
            self._current_epoch = state["epoch"]
            if not restore:
                self._save()  # a stage's start: a restart lands in this stage, with its optimizer

        def on_epoch_end(self, epoch, logs=None):
            self._current_epoch = epoch + 1
            if not state.get("diverged"):  # NaN weights are not worth continuing from
                self._save()

        def on_train_end(self, logs=None):
            self.model._initial_epoch = None  # set by a restore; the next stage starts where it says

        def _save(self):
            _save_backup(self, state, stage_index)

        def _check_same_epoch(self):
            _check_same_epoch(state)

    return MultiWorkerBackup()
