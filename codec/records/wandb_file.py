"""Read offline W&B runs straight from the run files the wandb library writes (run-<id>.wandb).

No network and no `wandb sync`: the file is a LevelDB-style log of protobuf `Record`s
(wandb.proto.wandb_internal_pb2), in 32 KiB blocks after a 7-byte ":W&B" header.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from google.protobuf.message import DecodeError
from wandb.proto import wandb_internal_pb2 as pb

_BLOCK = 32768
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    path: Path
    run_id: str = ""
    name: str = ""
    group: str = ""
    project: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None  # None: the run never finished (crashed or still running)

    @property
    def state(self) -> str:
        if self.exit_code is None:
            return "running_or_crashed"
        return "finished" if self.exit_code == 0 else "failed"


def _records(data: bytes) -> Iterator[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a W&B run file (no :W&B header)")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _HEADER:
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += left_in_block
            continue
        if pos + _HEADER + length > len(data):  # the last record is still being written, or was cut by a kill
            return
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def _value(item) -> Any:
    return json.loads(item.value_json) if item.value_json else None


def _key(item) -> str:
    return ".".join(item.nested_key) if item.nested_key else item.key


def read_run(path: str | Path) -> OfflineRun:
    """One offline run, from its run-<id>.wandb file or the offline-run-* folder holding it."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("run-*.wandb"))
        if not files:
            raise FileNotFoundError(f"no run-*.wandb file in {path}")
        path = files[0]
    run = OfflineRun(path=path)
    for raw in _records(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.name, run.group, run.project = r.run_id, r.display_name, r.run_group, r.project
            run.tags = list(r.tags)
            for item in r.config.update:
                run.config[_key(item)] = _value(item)
        elif kind == "config":
            for item in record.config.update:
                run.config[_key(item)] = _value(item)
        elif kind == "history":
            run.history.append({_key(i): _value(i) for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = _value(item)
            for item in record.summary.remove:
                run.summary.pop(_key(item), None)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    if not run.run_id:  # a run killed before its first records were flushed
        run.run_id = path.stem.removeprefix("run-")
    run.config = {k: (v.get("value") if isinstance(v, dict) and set(v) <= {"value", "desc"} else v)
                  for k, v in run.config.items() if k != "_wandb"}
    return run


def wait_until_written(path: str | Path, timeout: float = 60.0) -> bool:
    """Wait for wandb-core to write a finished run's exit record; True when it is there.

    wandb's `run.finish()` can return before its service has flushed the run file (measured: about 1 in 60
    offline runs on 2 busy cores, 1 in 120 idle, held only the 7-byte header when finish returned); a reader
    that comes right after, such as the sweep's report, would see a run without config or results."""
    path, deadline = Path(path), time.monotonic() + timeout
    while True:
        try:
            if read_run(path).exit_code is not None:
                return True
        except (OSError, ValueError, DecodeError):  # not there yet, or caught mid-write
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def find_runs(root: str | Path) -> list[Path]:
    """Every offline run file under `root` (searched recursively), one per run folder."""
    return sorted(p for p in Path(root).rglob("run-*.wandb") if p.parent.name.startswith("offline-run-"))
