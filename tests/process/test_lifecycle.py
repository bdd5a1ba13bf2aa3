"""Issue #10 against a real ``musicbot run``: SIGTERM, SIGKILL at chosen points, a second
process on the same file, restarts — and then the books are counted.

Every test ends with the member's promise checked from the committed file and the bot's
output: every charged job became one delivered track or one refund, never both.
"""

from __future__ import annotations

from pathlib import Path

from bot.core.ledger import MAX_BALANCE

from .harness import (
    books,
    deliveries,
    queue,
    rows,
    set_balance,
    start_bot,
    states,
    wait_until,
    write_config,
)


def _settled(folder: Path) -> bool:
    return all(s in ("done", "failed", "cancelled") for s in states(folder).values())


def _assert_promise_kept(folder: Path) -> None:
    outcome = books(folder)
    assert outcome.lost == 0
    assert outcome.charged_twice == outcome.refunded_twice == 0
    assert outcome.delivered_and_refunded == 0
    assert outcome.balance_matches_ledger


def test_a_restart_resumes_the_queue_on_its_own(tmp_path: Path) -> None:
    write_config(tmp_path)
    jobs = queue(tmp_path, [(f"song {i}", 4.0) for i in range(5)])
    bot = start_bot(tmp_path)
    try:
        assert wait_until(lambda: "running" in states(tmp_path).values(), 120)
        assert bot.stop() == 0  # SIGTERM: running jobs go back to the queue
        assert "running" not in states(tmp_path).values()
        assert set(states(tmp_path).values()) <= {"queued", "rendered", "done"}

        again = start_bot(tmp_path)
        assert wait_until(lambda: _settled(tmp_path), 180), states(tmp_path)
        again.stop()
    finally:
        bot.kill()
    assert states(tmp_path) == dict.fromkeys(jobs, "done")
    assert set(deliveries(tmp_path)) == set(jobs)
    _assert_promise_kept(tmp_path)


def test_killed_right_after_an_upload_the_track_is_never_refunded(tmp_path: Path) -> None:
    write_config(tmp_path)
    [job] = queue(tmp_path, [("delivered once", 1.0)])
    bot = start_bot(tmp_path, crash_at="delivering")  # SIGKILL before `done` is committed
    assert bot.wait(180) == -9
    assert deliveries(tmp_path)[job] == 1 and states(tmp_path)[job] == "rendered"

    again = start_bot(tmp_path)
    try:
        assert wait_until(lambda: _settled(tmp_path), 120)
    finally:
        again.stop()
    assert states(tmp_path)[job] == "done"
    assert rows(tmp_path, "SELECT * FROM ledger WHERE kind = 'refund'") == []
    assert deliveries(tmp_path)[job] == 2  # at-least-once: the message may repeat, money not
    _assert_promise_kept(tmp_path)


def test_a_second_process_never_takes_a_live_job(tmp_path: Path) -> None:
    write_config(tmp_path)
    [job] = queue(tmp_path, [("long one", 25.0)])
    bot = start_bot(tmp_path)
    try:
        assert wait_until(lambda: states(tmp_path)[job] == "running", 120)
        owner = rows(tmp_path, "SELECT owner FROM jobs WHERE id = ?", (job,))[0]["owner"]
        side = start_bot(tmp_path, "console", "-c", "/balance", name="console")
        assert side.wait(120) == 0
        row = rows(tmp_path, "SELECT * FROM jobs WHERE id = ?", (job,))[0]
        assert row["state"] in ("running", "rendered", "done")
        assert row["state"] != "running" or row["owner"] == owner
        assert wait_until(lambda: _settled(tmp_path), 240)
    finally:
        bot.stop()
    row = rows(tmp_path, "SELECT * FROM jobs WHERE id = ?", (job,))[0]
    assert row["state"] == "done" and row["attempts"] == 1 and row["crashes"] == 0
    assert deliveries(tmp_path)[job] == 1
    _assert_promise_kept(tmp_path)


def test_a_poison_job_is_failed_alone_and_its_batch_mates_finish(tmp_path: Path) -> None:
    write_config(tmp_path, max_crashes=3)
    jobs = queue(tmp_path, [("calm", 2.0), ("poison pill", 2.0), ("warm", 2.0), ("cool", 2.0)])
    poison = jobs[1]
    for _ in range(8):  # each start: the poison job kills the process when it generates
        bot = start_bot(tmp_path, crash_at="generating@poison")
        wait_until(lambda bot=bot: not bot.alive() or _settled(tmp_path), 120)
        bot.stop()
        if _settled(tmp_path):
            break
    final = states(tmp_path)
    assert final[poison] == "failed"
    assert all(final[j] == "done" for j in jobs if j != poison)
    row = rows(tmp_path, "SELECT * FROM jobs WHERE id = ?", (poison,))[0]
    assert row["crashes"] == 3 and row["refunded"] == row["price"]
    mates = rows(tmp_path, "SELECT attempts, crashes FROM jobs WHERE id != ?", (poison,))
    assert all(r["attempts"] == 1 and r["crashes"] <= 1 for r in mates)
    _assert_promise_kept(tmp_path)


def test_two_bots_on_one_file_share_the_queue_without_overlap(tmp_path: Path) -> None:
    write_config(tmp_path)
    jobs = queue(tmp_path, [(f"shared {i}", 1.0) for i in range(8)])
    first, second = start_bot(tmp_path, name="first"), start_bot(tmp_path, name="second")
    try:
        assert wait_until(lambda: _settled(tmp_path), 240), states(tmp_path)
    finally:
        first.stop()
        second.stop()
    assert states(tmp_path) == dict.fromkeys(jobs, "done")
    assert deliveries(tmp_path) == dict.fromkeys(jobs, 1)
    assert all(r["attempts"] == 1 for r in rows(tmp_path, "SELECT attempts FROM jobs"))
    _assert_promise_kept(tmp_path)


def test_a_refund_past_the_balance_cap_never_stops_the_bot(tmp_path: Path) -> None:
    write_config(tmp_path, max_crashes=1)
    [job] = queue(tmp_path, [("rich member", 2.0)])
    set_balance(tmp_path, MAX_BALANCE)  # an admin sets the cap while the job is pending
    crashed = start_bot(tmp_path, crash_at="generating")
    assert crashed.wait(180) == -9  # the job's process dies: with max_crashes 1 it must fail

    again = start_bot(tmp_path)  # recovery refunds past the cap, and the bot still starts
    try:
        assert wait_until(lambda: states(tmp_path)[job] == "failed", 120)
        assert again.alive()
    finally:
        assert again.stop() == 0
    balance = rows(tmp_path, "SELECT balance FROM accounts")[0]["balance"]
    assert balance == MAX_BALANCE + rows(tmp_path, "SELECT price FROM jobs")[0]["price"]
    _assert_promise_kept(tmp_path)
