"""Concurrency and crashes, with real processes: nothing lost, nothing locked, killed runs reported lost."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import llmops

WRITER = textwrap.dedent("""
    import sys, llmops
    ws = llmops.Workspace(sys.argv[1], store_url=sys.argv[2] or None)
    with ws.start_run(f"writer-{sys.argv[3]}") as run:
        for i in range(50):
            run.log_param(f"p{i}", i)
        for i in range(2000):
            run.log_metric("m", float(i), step=i)
            if i % 97 == 0:
                ws.registry.push("dataset", f"d{sys.argv[3]}", {"i": i})
""")


def test_four_processes_log_at_once(tmp_path, store_url):
    root = tmp_path / "shared"
    llmops.Workspace(root, store_url=store_url).close()  # migrate once, as `llmops init` would
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), store_url or "", str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(4)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert "database is locked" not in err
        assert p.returncode == 0, err
    ws = llmops.Workspace(root, store_url=store_url)
    runs = ws.search_runs("attributes.name LIKE 'writer-%'")
    assert len(runs) == 4
    for r in runs:
        assert r.status == "finished"
        assert len(r.params) == 50
        assert [p.step for p in r.metric_history("m")] == list(range(2000))
    assert len(ws.registry.list("dataset")) == 4
    ws.close()


VICTIM = textwrap.dedent("""
    import sys, time, llmops
    ws = llmops.Workspace(sys.argv[1], store_url=sys.argv[2] or None)
    with ws.start_run("victim") as run:
        run.log_param("lr", 0.1)
        run.log_metric("loss", 1.0)
        run.flush()
        print(run.id, flush=True)
        while True:
            run.log_metric("loss", 0.5)
            time.sleep(0.01)
""")


def test_killed_process_leaves_store_consistent_and_run_lost(tmp_path, store_url):
    root = tmp_path / "w"
    ws = llmops.Workspace(root, store_url=store_url)
    with ws.start_run("earlier") as earlier:
        earlier.log_metric("acc", 0.9)
    ws.close()
    proc = subprocess.Popen([sys.executable, "-c", VICTIM, str(root), store_url or ""],
                            stdout=subprocess.PIPE, text=True)
    victim_id = proc.stdout.readline().strip()
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ws = llmops.Workspace(root, store_url=store_url)
    assert ws.get_run(earlier.id).metrics == {"acc": 0.9}
    victim = ws.get_run(victim_id)
    assert victim.status == "running"  # nothing claimed it finished
    assert victim.state == "lost"  # its process is gone
    assert victim.params == {"lr": "0.1"}
    with ws.start_run("after") as run:  # the store still takes writes
        run.log_metric("ok", 1)
    assert ws.get_run(run.id).status == "finished"
    ws.close()


def test_stale_heartbeat_reads_as_lost(tmp_path):
    from sqlalchemy import update

    from llmops.store.schema import RunRow

    ws = llmops.Workspace(tmp_path / "w", lost_after=30)
    with ws.start_run("remote") as run:
        pass
    with ws.engine.begin() as conn:  # as if a run on another host stopped beating a minute ago
        conn.execute(update(RunRow).where(RunRow.id == run.id).values(
            status="running", host="elsewhere", heartbeat_at=time.time() - 60))
    assert ws.get_run(run.id).state == "lost"
    with ws.engine.begin() as conn:
        conn.execute(update(RunRow).where(RunRow.id == run.id).values(heartbeat_at=time.time()))
    assert ws.get_run(run.id).state == "running"


PUSHER = textwrap.dedent("""
    import sys, llmops
    ws = llmops.Workspace(sys.argv[1], store_url=sys.argv[2] or None, create=False)
    for i in range(int(sys.argv[4])):
        av = ws.registry.push("prompt", "shared", {"writer": sys.argv[3], "i": i})
        print(av.version, av.outcome, flush=True)
    ws.close()
""")


def test_eight_processes_push_one_asset_and_every_push_gets_its_own_version(tmp_path, store_url):
    """Issue 8: on PostgreSQL, concurrent pushes to one name failed to allocate version numbers."""
    root, procs_n, pushes = tmp_path / "shared", 8, 20
    llmops.Workspace(root, store_url=store_url).close()
    procs = [subprocess.Popen([sys.executable, "-c", PUSHER, str(root), store_url or "", str(n), str(pushes)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(procs_n)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err
    lines = [line.split() for out, _ in results for line in out.splitlines()]
    assert len(lines) == procs_n * pushes and {o for _, o in lines} == {"new"}
    assert sorted(int(v) for v, _ in lines) == list(range(1, procs_n * pushes + 1))
    ws = llmops.Workspace(root, store_url=store_url)
    versions = ws.registry.versions("prompt/shared")
    assert [v.version for v in versions] == list(range(1, procs_n * pushes + 1))
    assert len({v.digest for v in versions}) == procs_n * pushes
    assert [v.parent for v in versions] == [None] + list(range(1, procs_n * pushes))
    ws.close()
