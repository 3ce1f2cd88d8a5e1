"""Two processes on one workspace (#23): no stroke is lost without an error, creation is atomic."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from helpers import start_holder
from napari_brainfeatures.workspace import Workspace, WorkspaceBusyError, WorkspaceError

SHAPE = (1, 40, 40)  # one chunk: every write of both processes lands in the same chunk
N = 150  # single-pixel writes per process

WRITER = textwrap.dedent(
    """
    import json, os, sys, time
    from napari_brainfeatures.workspace import Workspace, WorkspaceBusyError
    root, wid, n, style, wait, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:7]
    while not os.path.exists(go):
        time.sleep(0.001)
    written, refused, errors = [], 0, []
    def pixel(i):
        p = 2 * i + wid
        return 0, p // 40, p % 40
    if style == "hold":  # like a napari window: one store, kept open
        try:
            arr = Workspace.open(root).labels()
        except WorkspaceBusyError as err:
            refused, errors = n, [str(err)]
        else:
            for i in range(n):
                arr[pixel(i)] = wid + 1
                written.append(i)
    else:  # a script opening the workspace for every write
        for i in range(n):
            try:
                with Workspace.open(root, wait=float(wait)) as ws:
                    ws.labels()[pixel(i)] = wid + 1
                written.append(i)
            except WorkspaceBusyError as err:
                refused += 1
                errors = [str(err)]
    out = {"pid": os.getpid(), "written": written, "refused": refused, "errors": errors}
    print(json.dumps(out))
    """
)


def _run_two(tmp_path, script: str, args: list[list[str]]) -> list[dict]:
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *a, str(go)], stdout=subprocess.PIPE, text=True
        )
        for a in args
    ]
    time.sleep(0.5)  # both started and imported (they poll for the go file)
    go.touch()
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


@pytest.mark.parametrize(("style", "wait"), [("hold", 0), ("each", 0), ("each", 30)])
def test_two_writers_lose_nothing_silently(tmp_path, style, wait):
    root = tmp_path / "w.brainfeatures"
    Workspace.open(root, shape=SHAPE).close()
    args = [[str(root), str(w), str(N), style, str(wait)] for w in (0, 1)]
    outs = _run_two(tmp_path, WRITER, args)
    stored = np.asarray(Workspace.open(root, mode="r").labels(mode="r")[0]).ravel()
    survived = 0
    for wid, out in enumerate(outs):
        assert len(out["written"]) + out["refused"] == N
        idx = 2 * np.asarray(out["written"], dtype=int) + wid
        assert (stored[idx] == wid + 1).all(), f"writer {wid} lost strokes silently"
        survived += len(idx)
    assert int((stored > 0).sum()) == survived  # nothing written that was not reported
    if wait:  # scripts that wait their turn: every write of both survives
        assert survived == 2 * N
    if style == "hold":  # one wrote all, the other was refused at once, told by whom
        refused = [o for o in outs if o["refused"]]
        assert len(refused) == 1 and refused[0]["refused"] == N
        other = next(o for o in outs if not o["refused"])
        assert f"process {other['pid']}" in refused[0]["errors"][0]
        assert "mode='r'" in refused[0]["errors"][0]


def test_busy_workspace_is_refused_for_writing_and_readable(tmp_path):
    root = tmp_path / "w"
    ws = Workspace.open(root, shape=SHAPE)
    ws.labels()[0, 1, 1] = 3
    ws.close()
    p = start_holder(root)
    try:
        with pytest.raises(WorkspaceBusyError, match=f"process {p.pid}") as err:
            Workspace.open(root, mode="r+")
        assert err.value.holder.pid == p.pid and isinstance(err.value, PermissionError)
        ws = Workspace.open(root)  # opening is fine; writing is what is refused
        assert ws.writer() is not None and ws.writer().pid == p.pid
        with pytest.raises(WorkspaceBusyError, match="mode='r'"):
            ws.labels()
        with pytest.raises(WorkspaceBusyError):
            ws.save_classes(ws.classes.add("CA1"))
        with pytest.raises(WorkspaceBusyError):
            ws.save_labels(np.ones((2, 2)), region=(0, slice(0, 2), slice(0, 2)))
        ro = Workspace.open(root, mode="r")
        assert int(ro.labels()[0, 1, 1]) == 3  # mode="r": reads, no lease needed
        with pytest.raises(ValueError, match="read-only"):
            ro.labels()[0, 1, 1] = 4
        with pytest.raises(WorkspaceError, match="read-only"):
            ro.save_classes(ro.classes)
    finally:
        p.communicate(input="", timeout=30)  # closes stdin: the holder exits
    with Workspace.open(root, mode="r+") as ws:  # free again
        ws.labels()[0, 1, 1] = 4
        assert ws.writer() is None


def test_lease_of_a_killed_process_is_taken_over(tmp_path):
    root = tmp_path / "w"
    Workspace.open(root, shape=SHAPE).close()
    p = start_holder(root)
    assert json.loads((root / ".writer.json").read_text())["pid"] == p.pid
    p.kill()  # kill -9: no clean-up runs
    p.communicate(timeout=30)
    with Workspace.open(root, mode="r+") as ws:
        ws.labels()[0, 0, 0] = 1
        import os

        assert json.loads((root / ".writer.json").read_text())["pid"] == os.getpid()


def test_lease_is_shared_inside_one_process(tmp_path):
    a = Workspace.open(tmp_path / "w", shape=SHAPE)
    a.labels()[0, 0, 0] = 1
    b = Workspace.open(tmp_path / "w", mode="r+")  # a second window of the same napari
    b.labels()[0, 0, 1] = 2
    b.close()
    a.labels()[0, 0, 2] = 3  # still a writer after b let go
    assert a.writer() is None
    a.close()
    assert not (tmp_path / "w" / ".writer.json").exists()
    with pytest.raises(ValueError, match="mode must be"):
        Workspace.open(tmp_path / "w", mode="w")  # type: ignore[arg-type]


CREATOR = textwrap.dedent(
    """
    import json, os, random, sys, time
    from napari_brainfeatures.workspace import Workspace
    base, n, go = sys.argv[1], int(sys.argv[2]), sys.argv[-1]
    random.seed(os.getpid())
    while not os.path.exists(go):
        time.sleep(0.001)
    created, errors = [], []
    for i in range(n):
        time.sleep(random.random() * 0.004)  # out of step: one finds the other half-way
        try:
            created.append(Workspace.open(f"{base}/w{i}", shape=(2, 8, 8)).info["created"])
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")
    print(json.dumps({"created": created, "errors": errors}))
    """
)


def test_two_processes_creating_one_workspace_share_it(tmp_path):
    n = 40  # the old code failed about 13 of 40 here
    a, b = _run_two(tmp_path, CREATOR, [[str(tmp_path), str(n)], [str(tmp_path), str(n)]])
    assert a["errors"] == [] and b["errors"] == []
    assert a["created"] == b["created"]  # both opened the same (the winner's) workspace
    for i in range(n):
        ws = Workspace.open(tmp_path / f"w{i}", mode="r")
        assert ws.shape == (2, 8, 8) and len(ws.classes) == 6
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".new")]  # no leftovers


def _child_writes(ws, q):  # a forked child inherits the parent's objects, not its lease
    try:
        ws.labels()[0, 0, 5] = 9
        q.put("written")
    except WorkspaceBusyError as err:
        q.put(str(err))


def test_a_forked_child_does_not_inherit_the_lease(tmp_path):
    import multiprocessing
    import os

    ws = Workspace.open(tmp_path / "w", shape=SHAPE)
    ws.labels()[0, 0, 0] = 1
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_writes, args=(ws, q))
    p.start()
    answer = q.get(timeout=60)
    p.join(60)
    ws.close()
    assert f"process {os.getpid()}" in answer
    assert int(Workspace.open(tmp_path / "w", mode="r").labels()[0, 0, 5]) == 0
