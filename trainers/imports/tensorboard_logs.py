"""TensorBoard event files → sources (``upload.Source``), read with TensorBoard's own reader
(``plugin_event_accumulator``: legacy ``simple_value`` scalars, as torch's SummaryWriter
writes them, come out as scalar tensors like TF2's; restarts are purged as TensorBoard
shows them).

Every time series of the scalar data class (and plugin-less tensor summaries holding one
number) becomes a key: the tag as is, after ``--prefix``. Each directory holding event files
(LOGDIR itself or any directory below it) is one run, named ``NAME/PATH`` (NAME: ``--name``
or LOGDIR's own name; PATH: the directory below LOGDIR), or NAME for LOGDIR itself and for
the only run with ``--name``. LOGDIR may also be one event file. (torch's ``add_scalars``
writes each of its series to a directory of its own: each becomes a run.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainers.imports.common import BadInput, one_line
from trainers.imports.upload import Source, source


def read_logdir(path: str, *, prefix: str = "", name: str | None = None):
    """(sources, notes): one source per directory with scalars, sorted by path."""
    from tensorboard.backend.event_processing import io_wrapper

    root = Path(path)
    if not root.exists():
        raise BadInput(f"{path}: no such file or directory")
    if root.is_file():
        if not io_wrapper.IsSummaryEventsFile(str(root)):
            raise BadInput(f"{path}: not a TensorBoard event file (no 'tfevents' in its name)")
        dirs = [root]
    else:
        dirs = sorted(Path(d) for d in io_wrapper.GetLogdirSubdirectories(str(root)))
    if not dirs:
        raise BadInput(f"{path}: no TensorBoard event files (*tfevents*) in it or below it")
    base = name or (root.parent if root.is_file() else root).resolve().name
    sources, notes = [], []
    for d in dirs:
        rel = "." if d == root else d.relative_to(root).as_posix()
        run_name = base if rel == "." or (name and len(dirs) == 1) else f"{base}/{rel}"
        src = _read_run(d, run_name, prefix)
        if src is None:
            notes.append(f"{d}: no scalars, not imported")
        else:
            sources.append(src)
    if not sources:
        raise BadInput(f"{path}: no scalar summaries in its event files")
    return sources, notes


def _read_run(path: Path, name: str, prefix: str) -> Source | None:
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea

    acc = pea.EventAccumulator(
        str(path),
        size_guidance={pea.TENSORS: 1},  # images, histograms, text: only one kept, unread
        tensor_size_guidance={"scalars": 0, "": 0},  # 0: keep every point
    )
    try:
        acc.Reload()
    except Exception as e:  # a corrupt file the reader does not skip itself
        raise BadInput(f"{path}: cannot read the event files: {one_line(e)}") from None
    keys, columns = [], []
    for tag in sorted(acc.Tags()["tensors"]):
        points = _scalars(acc, tag)
        if points is not None:
            columns.append(points)
            keys.append(prefix + tag)
    if not keys:
        return None
    code = np.concatenate([np.full(len(c[0]), i) for i, c in enumerate(columns)])
    step, value, time = (np.concatenate([c[j] for c in columns]) for j in range(3))
    return source(name, {"format": "tensorboard", "path": str(path.resolve())}, keys, code,
                  step, value, time)  # fmt: skip


def _scalars(acc, tag: str):
    """(steps, values, wall times) of a scalar time series, or None for other data."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.util import tensor_util

    meta = acc.AllSummaryMetadata().get(tag)
    if meta is None:  # no metadata: an old tensor summary TensorBoard keeps one point of
        return None
    if meta.data_class != summary_pb2.DATA_CLASS_SCALAR and not (
        meta.data_class == summary_pb2.DATA_CLASS_UNKNOWN and not meta.plugin_data.plugin_name
    ):
        return None
    events = acc.Tensors(tag)
    values = []
    for event in events:
        array = tensor_util.make_ndarray(event.tensor_proto)
        if array.size != 1 or array.dtype.kind not in "biuf":
            return None  # a plugin-less tensor that is not one number
        values.append(float(array.reshape(-1)[0]))
    steps = np.array([e.step for e in events], np.int64)
    times = np.array([e.wall_time for e in events], np.float64)
    return steps, np.array(values, np.float64), times
