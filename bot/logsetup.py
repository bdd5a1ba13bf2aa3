"""Logging for the ``musicbot`` command line: one format, quiet libraries, no unactionable noise.

Start-up used to open with warnings an operator can do nothing about (xFormers without its
CUDA kernels, discord.py without voice support, deprecations inside torch and audiocraft).
Each one is filtered here by its exact message, with the reason beside it, so that any other
warning from the same library still shows.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

from bot import log_redaction

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

NOISY_LOGGERS = ("audiocraft", "discord", "slack_bolt", "slack_sdk", "aiohttp.access")
"""Libraries that log routine chatter at INFO: shown from WARNING up unless DEBUG is asked."""

UNACTIONABLE_LOGS: tuple[tuple[str, str], ...] = (
    # xformers warns at import that its C++/CUDA kernels do not match this torch; audiocraft
    # falls back to torch's own attention, and a matching xformers build does not exist.
    ("xformers", r"xFormers can't load C\+\+/CUDA extensions"),
    ("xformers", r"A matching Triton is not available"),
    # discord.py warns that PyNaCl/davey are missing for voice; the bot never joins voice.
    ("discord", r"voice will NOT be supported"),
    # audiocraft's T5 conditioner runs outside autocast by design; nothing to configure.
    ("audiocraft", r"T5 has no autocast"),
)
"""(logger name prefix, message regex) of log records an operator cannot act on."""

UNACTIONABLE_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # audiocraft's encoder builds its convolutions with the old weight_norm API.
    (FutureWarning, r"`torch.nn.utils.weight_norm` is deprecated"),
    # pydub and discord.py import audioop (removed in Python 3.13); their concern, not ours.
    (DeprecationWarning, r"'audioop' is deprecated"),
    # audiocraft asks for hub ids instead of short names; the engine already passes hub ids.
    (UserWarning, r"MusicGen pretrained model relying on deprecated checkpoint mapping"),
)
"""(category, message regex) of Python warnings an operator cannot act on."""


class UnactionableFilter(logging.Filter):
    """Drops the log records listed in :data:`UNACTIONABLE_LOGS`; passes everything else."""

    def __init__(self, rules: tuple[tuple[str, str], ...] = UNACTIONABLE_LOGS) -> None:
        super().__init__()
        self._rules = [(prefix, re.compile(pattern)) for prefix, pattern in rules]

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a record from a listed library whose message matches its pattern."""
        message = record.getMessage()
        return not any(
            (record.name == prefix or record.name.startswith(prefix + "."))
            and pattern.search(message)
            for prefix, pattern in self._rules
        )


def configure_logging(level: str) -> None:
    """Log to stderr at ``level`` (a logging level name), with library noise filtered out."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format=FORMAT)
    root = logging.getLogger()
    # On the handlers, not the loggers: a logger's filter misses records of its children.
    for handler in root.handlers:
        if not any(isinstance(f, UnactionableFilter) for f in handler.filters):
            handler.addFilter(UnactionableFilter())
    log_redaction.install()  # no bearer URL, token or outside request body, at any level
    quiet = max(logging.WARNING, root.level)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(quiet)
    # aiosqlite logs SQL parameters at DEBUG, and those include interaction tokens.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, root.level))
    for category, pattern in UNACTIONABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    # huggingface_hub logs every connection retry with the full exception; the loader's own
    # error names the way out (debug model or a local folder) once the retries are over.
    # huggingface_hub resets its logger's level on import; this variable is what it reads.
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    # transformers warns about tokenizer legacy modes when T5 loads; it reads this variable.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
