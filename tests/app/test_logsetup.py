"""What an operator reads on stderr at start-up: no warnings they cannot act on, the rest intact.

The real libraries emit the real warnings in a fresh interpreter (they warn once, at import),
so this runs a subprocess and belongs to the slow tier.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import logging
from bot.logsetup import configure_logging
configure_logging("info")
import xformers.ops  # warns about its missing C++/CUDA kernels
import pydub  # imports audioop, deprecated
import discord
discord.Client(intents=discord.Intents(guilds=True))  # warns that voice is not supported
import torch
torch.nn.utils.weight_norm(torch.nn.Linear(2, 2))  # deprecated API inside audiocraft
logging.getLogger("xformers").warning("some other xformers problem")
logging.getLogger("discord.client").warning("some other discord problem")
"""


@pytest.mark.slow
def test_start_up_noise_is_filtered_and_other_warnings_still_show() -> None:
    out = subprocess.run([sys.executable, "-W", "default", "-c", CHILD], cwd=REPO,
                         capture_output=True, text=True, timeout=300, check=True)
    for noise in ("C++/CUDA extensions", "voice will NOT be supported", "weight_norm",
                  "audioop"):
        assert noise not in out.stderr
    assert "WARNING xformers: some other xformers problem" in out.stderr
    assert "WARNING discord.client: some other discord problem" in out.stderr
