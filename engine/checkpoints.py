"""A run's ``ckpt/`` directory read without TensorFlow, so damage of any kind is found
before any data is loaded and before anything is trained over.

TensorFlow itself ignores a ``checkpoint`` state file it cannot parse (it logs and
starts from scratch, then overwrites the older checkpoints) and finds a truncated
data file only when it restores. ``inspect_checkpoints`` refuses instead: ``ckpt``
not a directory or not writable, a state file that does not parse, is missing
beside checkpoint files or names a checkpoint whose index is missing, truncated or
unreadable, or whose data shards are missing, unreadable or shorter than the index
says. The one error line names the damaged file and the intact checkpoints kept.
"""

import os
import re
import struct
from pathlib import Path
from typing import Collection, Optional

from util.errors import ConfigError

STATE_FILE = "checkpoint"
# a checkpoint's .index is a table file: a 48-byte footer ending in this magic number
TABLE_MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)
TABLE_FOOTER = 48
_STATE_LINE = re.compile(r'^(\w+)\s*:\s*(?:"((?:[^"\\]|\\.)*)"|[-+0-9.eEinfa]+)$')
_STATE_KEYS = ("model_checkpoint_path", "all_model_checkpoint_paths",
               "all_model_checkpoint_timestamps", "last_preserved_timestamp")
_SHARD = re.compile(r"\.data-(\d{5})-of-(\d{5})$")
# BundleEntryProto fields (tensorflow/core/protobuf/tensor_bundle.proto)
_SHARD_ID, _OFFSET, _SIZE = 3, 4, 5


def _varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("a varint runs past its record")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _block_entries(buf, handle):
    """(key, value) of the table block at ``handle`` (its offset and size varints)."""
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if offset + size + 5 > len(buf) or size < 4:
        raise ValueError("a block lies outside the file")
    if buf[offset + size] != 0:  # compressed: TensorFlow writes none; not checked further
        return
    data = buf[offset:offset + size]
    (restarts,) = struct.unpack_from("<I", data, size - 4)
    end, pos, key = size - 4 - 4 * restarts, 0, b""
    while pos < end:
        shared, pos = _varint(data, pos)
        own, pos = _varint(data, pos)
        length, pos = _varint(data, pos)
        key = key[:shared] + data[pos:pos + own]
        pos += own
        yield key, data[pos:pos + length]
        pos += length


def _varint_fields(message):
    """The varint fields of a protobuf message (others skipped)."""
    fields, pos = {}, 0
    while pos < len(message):
        tag, pos = _varint(message, pos)
        wire = tag & 7
        if wire == 0:
            fields[tag >> 3], pos = _varint(message, pos)
        elif wire == 2:
            length, pos = _varint(message, pos)
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unknown protobuf wire type {wire}")
    return fields


def shard_sizes(index_bytes: bytes) -> dict:
    """{shard: bytes its data file must hold} from a checkpoint index's entries."""
    footer = index_bytes[-TABLE_FOOTER:]
    _, pos = _varint(footer, 0)
    _, pos = _varint(footer, pos)  # the meta-index block: unused
    need = {}
    for _, handle in _block_entries(index_bytes, footer[pos:]):
        for key, value in _block_entries(index_bytes, handle):
            if key:  # the empty key holds the bundle header
                entry = _varint_fields(value)
                shard = entry.get(_SHARD_ID, 0)
                need[shard] = max(need.get(shard, 0), entry.get(_OFFSET, 0) + entry.get(_SIZE, 0))
    return need


def checkpoint_names(ckpt_dir: Path) -> list:
    """Prefixes (ckpt-N) of the checkpoint files in ``ckpt_dir``, in save order."""
    names = {f.name[:-len(".index")] if f.name.endswith(".index") else _SHARD.split(f.name)[0]
             for f in ckpt_dir.iterdir() if f.name.endswith(".index") or _SHARD.search(f.name)}
    return sorted(names, key=lambda n: (len(n), n))


def parse_checkpoint_state(path: Path) -> tuple[Optional[str], list]:
    """(latest prefix, [every prefix named]) of a ``checkpoint`` state file; ValueError
    naming the first line TensorFlow's text-proto reader would reject."""
    latest, paths = None, []
    text = path.read_bytes().decode("utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        match = _STATE_LINE.match(line)
        if not match or match.group(1) not in _STATE_KEYS:
            raise ValueError(f"line {number} is not a checkpoint state entry: {line[:80]!r}")
        key, value = match.group(1), match.group(2)
        if key.endswith(("_path", "_paths")):
            if not value:
                raise ValueError(f"line {number} names no checkpoint: {line[:80]!r}")
            if key == "model_checkpoint_path":
                latest = value
            else:
                paths.append(value)
    if latest is None:
        raise ValueError("it names no model_checkpoint_path")
    return latest, paths + ([latest] if latest not in paths else [])


def checkpoint_damage(prefix: Path | str) -> Optional[str]:
    """Why the checkpoint at ``prefix`` (ckpt_dir/ckpt-N) cannot be restored, or None."""
    index = Path(f"{prefix}.index")
    if not index.is_file():
        return f"{index} is missing"
    try:
        buf = index.read_bytes()
    except OSError as err:
        return f"{index} cannot be read ({err.strerror})"
    if len(buf) < TABLE_FOOTER or not buf.endswith(TABLE_MAGIC):
        return f"{index} is truncated or not a checkpoint index ({len(buf)} bytes)"
    try:
        need = shard_sizes(buf)
    except (ValueError, struct.error) as err:
        return f"{index} cannot be parsed ({err})"
    shards = [m for m in map(_SHARD.search, map(str, index.parent.glob(
        f"{index.name[:-len('.index')]}.data-*-of-*"))) if m]
    total = max([int(m.group(2)) for m in shards] + [max(need, default=0) + 1])
    for shard in range(total):
        data = Path(f"{prefix}.data-{shard:05d}-of-{total:05d}")
        if not data.is_file():
            return f"{data} is missing"
        try:
            with open(data, "rb") as f:
                size = f.seek(0, os.SEEK_END)
        except OSError as err:
            return f"{data} cannot be read ({err.strerror})"
        if size < need.get(shard, 0):
            return f"{data} is truncated ({size} of {need[shard]} bytes)"
    return None


def checkpoint_error(ckpt_dir: Path | str, damage: str,
                     damaged: Collection[str] = ()) -> ConfigError:
    """The one line for a damaged ``ckpt/``: the file, what is kept, the ways out.
    ``damaged``: checkpoint names known to be bad beyond what the files show."""
    ckpt_dir = Path(ckpt_dir)
    readable = ckpt_dir.is_dir() and os.access(ckpt_dir, os.R_OK | os.X_OK)
    intact = [n for n in checkpoint_names(ckpt_dir) if n not in damaged
              and checkpoint_damage(ckpt_dir / n) is None] if readable else []
    if intact:
        kept = f"kept: the intact checkpoint{'s' * (len(intact) > 1)} {', '.join(intact)}"
    else:
        kept = "no intact checkpoint is left"
    return ConfigError(f"checkpoint damage in {ckpt_dir}: {damage}; nothing was trained, "
                       f"deleted or overwritten ({kept}): repair or move away the damaged "
                       "file, or pass --force_init to start the run over")


def inspect_checkpoints(ckpt_dir: Path | str) -> Optional[str]:
    """The latest checkpoint prefix of a run's ``ckpt/`` (None when there is none yet);
    ConfigError (``checkpoint_error``) for any damage."""
    ckpt_dir = Path(ckpt_dir)
    if not os.path.lexists(ckpt_dir):
        return None
    if not ckpt_dir.is_dir():
        raise checkpoint_error(ckpt_dir, f"{ckpt_dir} is not a directory")
    if not os.access(ckpt_dir, os.R_OK | os.W_OK | os.X_OK):
        raise checkpoint_error(ckpt_dir, f"{ckpt_dir} is not readable and writable "
                               "(permissions)")
    state = ckpt_dir / STATE_FILE
    if not os.path.lexists(state):
        names = checkpoint_names(ckpt_dir)
        if names:
            raise checkpoint_error(ckpt_dir, f"the state file {state} is missing beside "
                                   f"{', '.join(names)} (a new run would overwrite them)")
        return None
    try:
        latest, named = parse_checkpoint_state(state)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        detail = err.strerror if isinstance(err, OSError) else str(err)
        raise checkpoint_error(ckpt_dir, f"the state file {state} cannot be parsed "
                               f"({detail})") from None
    for name in named:
        damage = checkpoint_damage(Path(name) if os.path.isabs(name) else ckpt_dir / name)
        if damage:
            raise checkpoint_error(ckpt_dir, f"{state} names {name}, but {damage}")
    return str(Path(latest) if os.path.isabs(latest) else ckpt_dir / latest)
