"""The `musicbot` command as an operator uses it: console, generate, doctor, db, failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pydub import AudioSegment

from bot.core.db import MIGRATIONS

ROOT = Path(__file__).resolve().parents[2]


def musicbot(*args: str, cwd: Path, path_env: str | None = None,
             timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISCORD_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN",
                        "SLACK_SIGNING_SECRET", "MUSICBOT_CONFIG")}
    env["PYTHONPATH"] = str(ROOT)
    if path_env is not None:
        env["PATH"] = path_env
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def mp3_path(output: str) -> Path:
    lines = [line for line in output.splitlines() if line.startswith("MP3 written: ")]
    assert lines, output
    return Path(lines[-1].removeprefix("MP3 written: "))


def test_console_music_then_balance_makes_an_mp3_and_charges(tmp_path: Path) -> None:
    done = musicbot("console", "--model", "debug", "-c", '/music prompt:"lofi hip hop" duration:3',
                    "-c", "/balance", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    track = mp3_path(done.stdout)
    audio = AudioSegment.from_file(track, format="mp3")
    assert 2.8 <= audio.duration_seconds <= 3.3
    assert "noise" in done.stdout  # the debug model is announced as noise
    assert "Charged 10 tokens" in done.stdout
    # the terminal is the operator's own, so the balance is shown with the receipt
    assert "charged 10 tokens · your balance is now 190 tokens" in done.stdout
    assert "Your balance: 190 tokens." in done.stdout
    assert (tmp_path / "musicbot.sqlite3").exists()


def test_console_script_fails_when_a_command_fails(tmp_path: Path) -> None:
    done = musicbot("console", "--model", "debug", "-c", "/music prompt:x duration:999",
                    "-c", "/balance", cwd=tmp_path)
    assert done.returncode == 1
    assert "Invalid duration: must be between 1 and 30 seconds" in done.stdout
    assert "Your balance: 200 tokens." in done.stdout  # nothing was charged


def test_generate_writes_the_requested_file(tmp_path: Path) -> None:
    done = musicbot("generate", "ambient drone", "--duration", "2", "--model", "debug",
                    "--seed", "7", "-o", "out/drone.mp3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    audio = AudioSegment.from_file(tmp_path / "out" / "drone.mp3", format="mp3")
    assert 1.8 <= audio.duration_seconds <= 2.3
    assert "seed 7" in done.stdout
    assert "NOISE" in done.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("generation:\n  max_batch: [1,\n", "not valid YAML (line 3)"),
        ("ops:\n  event_loop: tokio\n", "must be auto, uvloop or asyncio"),
        ("generation:\n  max_batchh: 2\n", "Configuration error at 'generation.max_batchh'"),
    ],
)
def test_a_broken_config_is_one_clear_message(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "config.yaml").write_text(text)
    done = musicbot("console", "-c", "/balance", cwd=tmp_path)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("choice", "loop"), [("auto", "uvloop"), ("asyncio", "asyncio")])
def test_the_bot_runs_on_the_event_loop_its_config_names(tmp_path: Path, choice: str,
                                                         loop: str) -> None:
    (tmp_path / "config.yaml").write_text(
        f"log_level: DEBUG\nmodels:\n  default: debug\nops:\n  event_loop: {choice}\n")
    done = musicbot("console", "-c", "/balance", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"event loop: {loop}" in done.stdout + done.stderr


def test_missing_ffmpeg_is_one_clear_message(tmp_path: Path) -> None:
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    done = musicbot("console", "--model", "debug", "-c", "/balance", cwd=tmp_path,
                    path_env=str(empty_path))
    assert done.returncode == 2
    assert "ffmpeg is not installed" in done.stderr
    assert "apt-get install -y ffmpeg" in done.stderr
    assert "Traceback" not in done.stderr


def test_doctor_reports_each_check_and_the_way_out(tmp_path: Path) -> None:
    done = musicbot("doctor", "--model", "debug", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[ok  ] ffmpeg" in done.stdout
    assert "[ok  ] model debug" in done.stdout and "noise" in done.stdout
    assert "set DISCORD_TOKEN" in done.stdout


def test_doctor_explains_an_unloadable_model(tmp_path: Path) -> None:
    done = musicbot("doctor", "--model", str(tmp_path / "no-such-checkpoint"), cwd=tmp_path)
    assert done.returncode == 1
    assert "[FAIL] model" in done.stdout
    assert "debug" in done.stdout


def test_db_upgrade_is_idempotent(tmp_path: Path) -> None:
    first = musicbot("db", "upgrade", cwd=tmp_path)
    second = musicbot("db", "upgrade", cwd=tmp_path)
    assert first.returncode == second.returncode == 0
    assert f"applied migrations {[version for version, _, _ in MIGRATIONS]}" in first.stdout
    assert "up to date" in second.stdout


def test_run_without_tokens_uses_the_console_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISCORD_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN",
                        "SLACK_SIGNING_SECRET", "MUSICBOT_CONFIG")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--model", "debug"],
                            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "musicbot is running" in line:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    output = "".join(seen) + rest
    assert proc.returncode == 0, output
    assert "starting the console frontend" in output
    assert "random weights, the output is NOISE" in output
    assert "shutting down" in output


def test_admin_changes_a_discord_members_balance_from_the_shell(tmp_path: Path) -> None:
    where = ("--platform", "discord", "--community", "1234")
    granted = musicbot("admin", "grant", "42", "50", *where, "--reason", "contest", cwd=tmp_path)
    assert granted.returncode == 0, granted.stderr
    assert "42's new balance: 250 tokens." in granted.stdout
    refused = musicbot("admin", "take", "42", "ten", *where, cwd=tmp_path)
    assert refused.returncode == 2
    assert "Invalid amount" in refused.stderr
    ledger = musicbot("admin", "ledger", *where, cwd=tmp_path)
    assert "grant +50 → 250" in ledger.stdout and "contest" in ledger.stdout
    other_server = musicbot("admin", "balance", "42", "--platform", "discord",
                            "--community", "999", cwd=tmp_path)
    assert "42's balance: 200 tokens." in other_server.stdout  # balances are per server


def test_run_with_the_terminal_console_stops_on_sigterm(tmp_path: Path) -> None:
    # On a terminal `musicbot run` reads commands; a pending read must not keep it alive.
    import pty

    env = {k: v for k, v in os.environ.items()
           if k not in ("DISCORD_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN",
                        "SLACK_SIGNING_SECRET", "MUSICBOT_CONFIG")}
    env["PYTHONPATH"] = str(ROOT)
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--model", "debug"],
                            cwd=tmp_path, env=env, stdin=terminal, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    os.close(terminal)
    try:
        assert proc.stdout is not None
        seen = ""
        while not seen.endswith("musicbot> "):  # the prompt: the REPL is reading a line
            char = proc.stdout.read(1)
            assert char, seen
            seen += char
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(controller)
    output = seen + rest
    assert proc.returncode == 0, output
    assert "shutting down" in output and "Traceback" not in output


def test_generate_takes_sampling_options_and_the_format_from_the_file_name(
    tmp_path: Path,
) -> None:
    done = musicbot("generate", "ambient drone", "--duration", "2", "--model", "debug",
                    "--seed", "7", "--temperature", "0.9", "--top-k", "100", "--top-p", "0.5",
                    "--cfg", "4", "--genre", "ambient", "--tempo", "80", "-o", "drone.ogg",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    audio = AudioSegment.from_file(tmp_path / "drone.ogg", format="ogg")  # mono 32 kHz Vorbis
    assert 1.8 <= audio.duration_seconds <= 2.3


@pytest.mark.parametrize(("args", "expected"), [
    (("--format", "wav", "-o", "x.mp3"), "--format wav does not match"),
    (("-o", "x.txt"), "cannot tell the format"),
    (("--format", "mp4"), "Invalid format"),
    (("--temperature", "9"), "Invalid temperature: must be between 0.05 and 5"),
    (("--top-k", "-1"), "Invalid top_k: must be between 0 and 2048"),
    (("--duration", "abc"), "Invalid duration"),
])
def test_generate_refuses_bad_options_in_one_line(tmp_path: Path, args: tuple[str, ...],
                                                  expected: str) -> None:
    done = musicbot("generate", "drone", "--model", "debug", *args, cwd=tmp_path)
    assert done.returncode == 2
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no file, no database


def test_naming_a_missing_event_loop_is_one_clear_message(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot import eventloop
    from bot.errors import ConfigError

    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed
    assert eventloop.loop_factory("auto") is None  # auto falls back to asyncio's loop
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        eventloop.loop_factory("uvloop")
