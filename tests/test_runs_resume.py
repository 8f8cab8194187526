"""Workspace.resume_run: reopening a killed, failed or lost run under the same id (what `finetune run --resume` uses)."""

import signal
import subprocess
import sys
import textwrap

import pytest

from llmops.errors import LLMOpsError, ParamConflict, RunNotFound

# A child process that opens a run, logs one point, says its id and waits: a run another live process holds.
HOLDER = textwrap.dedent("""
    import sys, llmops
    ws = llmops.Workspace(sys.argv[1], store_url=sys.argv[2] or None)
    with ws.start_run("holder", kind="finetune") as run:
        run.log_metric("loss", 1.0, step=1)
        run.flush()
        print(run.id, flush=True)
        sys.stdin.readline()
""")


def _url(ws) -> str:
    return "" if ws.engine.url.get_backend_name() == "sqlite" else ws.engine.url.render_as_string(hide_password=False)


def _holder(ws):
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(ws.root), _url(ws)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return child, child.stdout.readline().strip()


def _killed_run(ws, steps=(1, 2, 3)):
    with pytest.raises(KeyboardInterrupt):
        with ws.start_run("job", kind="finetune") as run:
            run.log_params({"lr": 0.1, "digest": "abc"})
            for s in steps:
                run.log_metrics({"loss": 1.0 / s, "lr": 0.1}, step=s)
            run.log_metric("events", 1.0)
            raise KeyboardInterrupt
    return run.id


def test_resume_reopens_the_same_run_and_continues_its_steps(store_ws):
    run_id = _killed_run(store_ws)
    assert store_ws.get_run(run_id).status == "killed"
    with store_ws.resume_run(run_id) as run:
        assert run.id == run_id and run.kind == "finetune" and run.name == "job"
        info = store_ws.get_run(run_id)
        assert (info.status, info.ended_at, info.error) == ("running", None, None)
        run.log_metric("loss", 0.25, step=4)
        run.log_metric("events", 2.0)  # no step: continues after the stored last step (0)
        run.log_param("lr", 0.1)  # the same value again is fine
        with pytest.raises(ParamConflict, match="write-once"):
            run.log_param("digest", "other")
    info = store_ws.get_run(run_id)
    assert info.status == "finished" and info.ended_at is not None
    assert info.params == {"lr": "0.1", "digest": "abc"}
    assert [(p.step, p.value) for p in info.metric_history("loss")] == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25)]
    assert [(p.step, p.value) for p in info.metric_history("events")] == [(0, 1.0), (1, 2.0)]


def test_drop_metrics_after_removes_what_followed_the_checkpoint(store_ws):
    run_id = _killed_run(store_ws, steps=(1, 2, 3, 4, 5))
    with store_ws.resume_run(run_id, drop_metrics_after=3) as run:
        for s in (4, 5, 6):
            run.log_metric("loss", 10.0 + s, step=s)
    history = store_ws.get_run(run_id).metric_history("loss")
    assert [(p.step, p.value) for p in history] == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 14.0), (5, 15.0), (6, 16.0)]
    assert [p.step for p in store_ws.get_run(run_id).metric_history("lr")] == [1, 2, 3]


def test_a_failed_run_can_be_resumed_and_fail_again(store_ws):
    with pytest.raises(RuntimeError):
        with store_ws.start_run("job", kind="finetune") as first:
            raise RuntimeError("out of memory")
    with pytest.raises(ValueError):
        with store_ws.resume_run(first.id[:10]):  # a unique prefix, as `runs show` takes
            raise ValueError("bad again")
    info = store_ws.get_run(first.id)
    assert info.status == "failed" and "bad again" in info.error


def test_a_finished_run_is_refused_and_left_unchanged(store_ws):
    with store_ws.start_run("job", kind="finetune") as run:
        run.log_metric("loss", 1.0, step=1)
    before = store_ws.get_run(run.id)
    with pytest.raises(LLMOpsError, match="has finished; a finished run cannot be resumed"):
        with store_ws.resume_run(run.id, drop_metrics_after=0):
            pass
    after = store_ws.get_run(run.id)
    assert (after.status, after.ended_at) == ("finished", before.ended_at)
    assert [p.step for p in after.metric_history("loss")] == [1]


def test_a_run_held_by_a_live_process_is_refused(store_ws):
    child, run_id = _holder(store_ws)
    try:
        with pytest.raises(LLMOpsError, match=rf"run {run_id} is still running \(pid {child.pid}"):
            with store_ws.resume_run(run_id, drop_metrics_after=0):
                pass
        assert [p.step for p in store_ws.get_run(run_id).metric_history("loss")] == [1]
    finally:
        child.communicate("\n", timeout=60)
    assert store_ws.get_run(run_id).status == "finished"


def test_a_run_in_progress_here_is_refused(store_ws):
    with store_ws.start_run("job", kind="finetune") as run:
        with pytest.raises(LLMOpsError, match="still running"):
            with store_ws.resume_run(run.id):
                pass


def test_a_lost_run_whose_process_died_is_resumed(store_ws):
    child, run_id = _holder(store_ws)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    assert store_ws.get_run(run_id).state == "lost"
    with store_ws.resume_run(run_id, drop_metrics_after=0) as run:
        run.log_metric("loss", 0.5, step=1)
    info = store_ws.get_run(run_id)
    assert info.state == "finished"
    assert [(p.step, p.value) for p in info.metric_history("loss")] == [(1, 0.5)]


def test_unknown_run_id(store_ws):
    with pytest.raises(RunNotFound, match="no run with id"):
        with store_ws.resume_run("0123456789abcdef0123456789abcdef"):
            pass
