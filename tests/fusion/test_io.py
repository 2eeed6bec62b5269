import json
import os
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from fusion.common.errors import FusevalError
from fusion.common.files import atomic_output_dir, atomic_write_text
from fusion.io import INDEX_NAME, CheckpointReader, ShardedWriter, plan_shards


def _entries(tensors):
    return [(n, tuple(t.shape), t.dtype) for n, t in tensors.items()]


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "a": torch.randn(10, 20, generator=g),
        "b": torch.randn(300, generator=g).to(torch.bfloat16),
        "c": torch.randn(4, 4, 4, generator=g).to(torch.float16),
        "scalar": torch.tensor(3.5),
        "ids": torch.arange(7, dtype=torch.int64),
    }


def test_writer_round_trip_single_file(tmp_path, tensors):
    w = ShardedWriter(tmp_path, _entries(tensors))
    for n in reversed(list(tensors)):  # any order: each tensor lands at its planned offset
        w.write(n, tensors[n])
    files = w.finish()
    assert [f.name for f in files] == ["model.safetensors"]
    assert not (tmp_path / INDEX_NAME).exists()
    loaded = load_file(files[0])  # the official reader accepts our layout
    for n, t in tensors.items():
        assert torch.equal(loaded[n], t), n


def test_writer_shards_and_index(tmp_path, tensors):
    w = ShardedWriter(tmp_path, _entries(tensors), max_shard_bytes=700)
    for n, t in tensors.items():
        w.write(n, t)
    files = w.finish()
    assert len(files) > 1 and files[0].name == f"model-00001-of-{len(files):05d}.safetensors"
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert set(index["weight_map"]) == set(tensors)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    reader = CheckpointReader(tmp_path)
    for n, t in tensors.items():
        assert torch.equal(reader.get(n), t)


def test_plan_shards_respects_limit_and_order():
    e = [(str(i), (100,), torch.float32) for i in range(10)]  # 400 bytes each
    shards = plan_shards(e, 1000)
    assert [len(s) for s in shards] == [2, 2, 2, 2, 2]
    assert [x[0] for s in shards for x in s] == [str(i) for i in range(10)]
    assert len(plan_shards([("big", (1000,), torch.float32)], 10)) == 1  # oversize tensor gets its own shard


def test_writer_refuses_unfinished_and_wrong_shape(tmp_path, tensors):
    w = ShardedWriter(tmp_path, _entries(tensors))
    with pytest.raises(FusevalError, match="shape"):
        w.write("a", torch.zeros(3))
    w.write("a", tensors["a"])
    with pytest.raises(FusevalError, match="never written"):
        w.finish()


def test_writer_blocks_land_where_the_whole_tensor_would(tmp_path, tensors, monkeypatch):
    from fusion.common import faults

    passes = []
    monkeypatch.setattr(faults, "point", passes.append)
    (tmp_path / "w").mkdir(), (tmp_path / "b").mkdir()
    w, b = ShardedWriter(tmp_path / "w", _entries(tensors)), ShardedWriter(tmp_path / "b", _entries(tensors))
    for n, t in tensors.items():
        w.write(n, t)
        flat = t.reshape(-1)
        for start in reversed(range(0, flat.numel(), 7)):  # any order, a short last block
            b.write_block(n, flat[start:start + 7], start)
    assert len(passes) == 2 * len(tensors)  # the failpoint passes once per finished tensor, either way
    b.finish(), w.finish()
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == (tmp_path / "w" / "model.safetensors").read_bytes()
    with pytest.raises(FusevalError, match="does not fit"):
        b.write_block("b", torch.zeros(10), 295)
    with pytest.raises(FusevalError, match="does not fit"):
        b.write_block("a", torch.zeros(2, 2), 0)


def test_writer_unfinished_blocks(tmp_path, tensors):
    w = ShardedWriter(tmp_path, _entries(tensors))
    for n, t in tensors.items():
        w.write_block(n, t.reshape(-1)[:1], 0) if n == "b" else w.write(n, t)
    with pytest.raises(FusevalError, match="never written, e.g. 'b'"):
        w.finish()


# --- Streams: bytes in file order are staged in a ring and written chunk by chunk (O_DIRECT where
# the file system takes it); `reserve`/`commit` hand out the ring itself. Small chunks here, so
# the ring wraps many times and reservations are cut where it does.

@pytest.fixture
def big_tensors():
    g = torch.Generator().manual_seed(1)
    return {
        "odd": torch.randn(3001, generator=g).to(torch.bfloat16),  # odd: what follows is misaligned for float32
        "w": torch.randn(50, 70, generator=g),
        "empty": torch.zeros(0),
        "h": torch.randn(9000, generator=g).to(torch.float16),
        "ids": torch.arange(1001, dtype=torch.int64),
        "last": torch.randn(4097, generator=g).to(torch.bfloat16),
    }


@pytest.fixture
def small_chunks(monkeypatch):
    from fusion.io import stream

    monkeypatch.setattr(stream, "STAGE_BYTES", 8192)


def _expected(tmp_path, tensors, **kw):
    (tmp_path / "plain").mkdir()
    with ShardedWriter(tmp_path / "plain", _entries(tensors), direct=False, **kw) as w:
        for n in reversed(list(tensors)):  # out of order: plain writes only
            w.write(n, tensors[n])
        w.finish()
    return {f.name: f.read_bytes() for f in sorted((tmp_path / "plain").glob("*.safetensors"))}


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("shard_bytes", [10**9, 30_000])
def test_reserved_room_streams_every_byte_in_place(tmp_path, big_tensors, small_chunks, direct, shard_bytes):
    want = _expected(tmp_path, big_tensors, max_shard_bytes=shard_bytes)
    (tmp_path / "s").mkdir()
    open_tasks, step = 4, 700
    with ShardedWriter(tmp_path / "s", _entries(big_tensors), max_shard_bytes=shard_bytes, direct=direct,
                       open_bytes=open_tasks * step * 8) as w:
        queue = []
        for n, t in big_tensors.items():
            flat, at = t.reshape(-1), 0
            while True:  # several reservations open at once, filled after being made, committed in order
                r = w.reserve(n, at, min(step, flat.numel() - at))
                queue.append((r, flat[at:at + r.out.numel()]))
                at += r.out.numel()
                if len(queue) > open_tasks:
                    r0, src = queue.pop(0)
                    r0.out.copy_(src)
                    w.commit(r0)
                if at >= flat.numel():
                    break
        for r0, src in queue:
            r0.out.copy_(src)
            w.commit(r0)
        files = w.finish()
    assert {f.name: f.read_bytes() for f in files} == want
    assert len(want) == (1 if shard_bytes == 10**9 else 3)


def test_streams_fall_back_to_plain_writes(tmp_path, big_tensors, small_chunks, monkeypatch):
    want = _expected(tmp_path, big_tensors)
    # Out of order half-way: the file's stream ends and plain writes finish it.
    (tmp_path / "o").mkdir()
    with ShardedWriter(tmp_path / "o", _entries(big_tensors)) as w:
        names = list(big_tensors)
        for n in names[:2] + names[:1:-1]:
            w.write(n, big_tensors[n])
        w.finish()
    assert (tmp_path / "o" / "model.safetensors").read_bytes() == want["model.safetensors"]
    # A file system that refuses O_DIRECT: the writer streams through the page cache instead.
    real_open = os.open

    def no_direct(path, flags, *a):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(22, "Invalid argument")
        return real_open(path, flags, *a)

    def write_all(out):
        out.mkdir()
        with ShardedWriter(out, _entries(big_tensors)) as w:
            for n, t in big_tensors.items():
                w.write(n, t)
            w.finish()
        assert (out / "model.safetensors").read_bytes() == want["model.safetensors"]
        return w

    monkeypatch.setattr(os, "open", no_direct)
    assert not write_all(tmp_path / "n")._direct
    # One that takes O_DIRECT opens but refuses the writes: each stream switches to plain writes.
    direct_fds, refused, real_pwrite = set(), [], os.pwrite

    def open_direct(path, flags, *a):
        fd = real_open(path, flags, *a)
        if flags & getattr(os, "O_DIRECT", 0):
            direct_fds.add(fd)
        return fd

    def refuse_direct(fd, data, offset):
        if fd in direct_fds:
            refused.append(fd)
            raise OSError(22, "Invalid argument")
        return real_pwrite(fd, data, offset)

    def close(fd, real_close=os.close):
        direct_fds.discard(fd)  # the number may be reused
        real_close(fd)

    monkeypatch.setattr(os, "open", open_direct)
    monkeypatch.setattr(os, "pwrite", refuse_direct)
    monkeypatch.setattr(os, "close", close)
    write_all(tmp_path / "p")
    assert refused or not hasattr(os, "O_DIRECT")


def test_reservations_out_of_order_still_land(tmp_path, big_tensors, small_chunks):
    want = _expected(tmp_path, big_tensors)
    (tmp_path / "r").mkdir()
    with ShardedWriter(tmp_path / "r", _entries(big_tensors)) as w:
        for n in reversed(list(big_tensors)):
            flat = big_tensors[n].reshape(-1)
            r = w.reserve(n, 0, flat.numel())
            assert r.out.numel() == flat.numel()  # a buffer of its own: never cut
            r.out.copy_(flat)
            w.commit(r)
        w.finish()
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == want["model.safetensors"]


def test_an_unwritten_reservation_is_never_written(tmp_path, big_tensors, small_chunks):
    (tmp_path / "u").mkdir()
    with ShardedWriter(tmp_path / "u", _entries(big_tensors)) as w:
        w.reserve("odd", 0, 10)
        with pytest.raises(FusevalError, match="never written, e.g. 'empty'"):
            w.finish()


def test_mapped_view_reads_the_file_in_place(tmp_path, tensors):
    save_file({"a": tensors["a"], "b": tensors["b"]}, tmp_path / "model.safetensors")
    reader = CheckpointReader(tmp_path)
    with reader.mapped("b") as view:
        assert torch.equal(view, tensors["b"]) and view.dtype == torch.bfloat16
        assert torch.equal(view.reshape(-1)[290:], tensors["b"][290:])
    got = reader.get("a")
    got.zero_()  # get() returns memory of its own
    assert torch.equal(reader.get("a"), tensors["a"])


def test_reader_errors(tmp_path, tensors):
    save_file({"a": tensors["a"]}, tmp_path / "model-00001-of-00002.safetensors")
    (tmp_path / INDEX_NAME).write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                                                  "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(FusevalError, match="model-00002-of-00002.safetensors: shard listed .* is missing"):
        CheckpointReader(tmp_path)


def test_truncated_and_corrupt_headers(tmp_path, tensors):
    d = tmp_path / "m"
    d.mkdir()
    save_file({"a": tensors["a"]}, d / "model.safetensors")
    raw = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(raw[:-10])
    with pytest.raises(FusevalError, match="truncated"):
        CheckpointReader(d)
    (d / "model.safetensors").write_bytes(struct.pack("<Q", 40) + b"{not json" + b" " * 40)
    with pytest.raises(FusevalError, match="corrupt safetensors header"):
        CheckpointReader(d)
    (d / "model.safetensors").write_bytes(b"abc")
    with pytest.raises(FusevalError, match="not a safetensors file"):
        CheckpointReader(d)


def test_pickle_refused_unless_allowed(tmp_path, tensors):
    torch.save({"a": tensors["a"]}, tmp_path / "pytorch_model.bin")
    with pytest.raises(FusevalError, match="pickle checkpoint refused.*--allow-pickle"):
        CheckpointReader(tmp_path)
    assert torch.equal(CheckpointReader(tmp_path, allow_pickle=True).get("a"), tensors["a"])


def test_atomic_output_dir_removes_partial_on_error(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(target) as tmp:
            (tmp / "model.safetensors").write_text("half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with atomic_output_dir(target) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(FusevalError, match="exists; pass --force"):
        with atomic_output_dir(target):
            pass
    with atomic_output_dir(target, force=True) as tmp:
        (tmp / "y").write_text("2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in target.iterdir()] == ["y"]


def test_atomic_write_text(tmp_path):
    p = tmp_path / "sub" / "f.txt"
    atomic_write_text(p, "hello")
    assert p.read_text() == "hello"
    assert [x.name for x in p.parent.iterdir()] == ["f.txt"]


def test_killed_writer_leftovers_are_cleaned_and_never_look_complete(tmp_path):
    import subprocess
    import sys

    target = tmp_path / "out"
    code = ("import time, sys; from fusion.common.files import atomic_output_dir\n"
            f"with atomic_output_dir({str(target)!r}) as tmp:\n"
            "    (tmp / 'model.safetensors').write_text('half'); print('ready', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.kill()
    proc.wait()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert not target.exists() and len(leftovers) == 1 and leftovers[0].startswith(".out.partial-")
    with atomic_output_dir(target) as tmp:
        (tmp / "model.safetensors").write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
