"""The engine on audiocraft's real code path with the debug MusicGen (random weights)."""

from __future__ import annotations

import numpy as np
import pytest

from bot.core.models import GenerationParams
from generation.audio import Audio
from generation.engine import Engine, GenerationRequest, build_debug_model
from generation.errors import GenerationError, GenerationStopped, ModelUnavailable
from tests.generation.conftest import MAX_DURATION


def params(seed: int, prompt: str = "calm piano", duration: float = 1.0) -> GenerationParams:
    return GenerationParams(prompt=prompt, duration=duration, model="debug", seed=seed)


def test_one_call_makes_a_track_per_prompt(engine: Engine) -> None:
    fractions: list[float] = []
    batch = [params(s, f"prompt {s}") for s in (1, 2, 3)]
    tracks = engine.generate(batch, on_progress=fractions.append)
    assert [t.samples.shape for t in tracks] == [(1, engine.sample_rate)] * 3
    assert not np.array_equal(tracks[0].samples, tracks[1].samples)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_same_seed_same_audio_alone_or_batched(engine: Engine) -> None:
    alone = engine.generate([params(42)])[0]
    batched = engine.generate([params(1, "rock"), params(42), params(3, "jazz")])[1]
    again = engine.generate([params(42)])[0]
    assert np.array_equal(alone.samples, batched.samples)
    assert np.array_equal(alone.samples, again.samples)
    assert not np.array_equal(alone.samples, engine.generate([params(43)])[0].samples)


def test_long_track_slides_the_window(engine: Engine) -> None:
    fractions: list[float] = []
    duration = MAX_DURATION * 2.5  # several windows of the test model
    track = engine.generate([params(5, duration=duration)], on_progress=fractions.append)[0]
    assert track.duration_s == pytest.approx(duration, abs=1e-3)
    # One smooth 0→1 progress across all windows, not a restart per window.
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert len(fractions) > 2 * MAX_DURATION * engine.model.frame_rate  # > one window


def test_stop_request_abandons_the_call_and_engine_stays_usable(engine: Engine) -> None:
    steps: list[float] = []
    with pytest.raises(GenerationStopped):
        engine.generate([params(1, duration=60)], on_progress=steps.append,
                        should_stop=lambda: len(steps) >= 5)
    assert len(steps) == 5
    assert engine.generate([params(1)])[0].duration_s == pytest.approx(1.0)


def test_extension_keeps_the_old_audio_and_adds_new_seconds(engine: Engine) -> None:
    first = engine.generate([params(9, duration=3)])[0]
    request = GenerationRequest(params(10, duration=2), continue_audio=first)
    extended = engine.generate([request])[0]
    assert extended.duration_s == pytest.approx(5.0, abs=1e-3)
    assert np.array_equal(extended.samples[:, : first.samples.shape[1]], first.samples)


def test_extension_accepts_audio_at_another_rate(engine: Engine) -> None:
    previous = Audio(np.zeros((2, 44100 * 2), dtype=np.float32), 44100)
    extended = engine.generate([GenerationRequest(params(1), continue_audio=previous)])[0]
    assert extended.sample_rate == engine.sample_rate
    assert extended.duration_s == pytest.approx(3.0, abs=1e-3)


def test_mixed_settings_in_one_batch_are_refused(engine: Engine) -> None:
    with pytest.raises(GenerationError):
        engine.generate([params(1, duration=1), params(2, duration=2)])


def test_debug_model_is_noise_and_the_same_after_a_restart(engine: Engine) -> None:
    # A fresh build stands in for a restarted bot: same weights, so a seed keeps its audio.
    fresh = build_debug_model("cpu", MAX_DURATION)
    assert all(
        np.array_equal(x.detach().numpy(), y.detach().numpy())
        for x, y in zip(fresh.lm.parameters(), engine.model.lm.parameters(), strict=True)
    )
    assert engine.noise


def test_hub_model_without_network_says_what_to_use_instead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelUnavailable) as err:
        Engine.load("facebook/musicgen-small", "cpu")
    message = err.value.user_message
    assert "no network" in message and "`debug`" in message and "folder" in message


def test_checkpoint_folder_without_weights_is_named(tmp_path) -> None:
    (tmp_path / "state_dict.bin").write_bytes(b"")
    with pytest.raises(ModelUnavailable) as err:
        Engine.load(str(tmp_path), "cpu")
    assert "compression_state_dict.bin" in err.value.user_message


def test_stride_must_be_shorter_than_the_window(engine: Engine) -> None:
    with pytest.raises(GenerationError):
        Engine(engine.model, "debug", "cpu", extend_stride_s=MAX_DURATION)
