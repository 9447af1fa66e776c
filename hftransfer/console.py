"""What a run prints: log lines that leave the progress bars intact, one level per process.

A plain ``StreamHandler`` writes into the middle of the line tqdm keeps redrawing, so every log record during
training broke the bar into a stray fragment. :class:`TqdmLoggingHandler` writes through ``tqdm.write``, which
clears the bars on the same terminal, prints the line and redraws them below it (with no bar active it is a plain
write).
"""

from __future__ import annotations

import logging

from tqdm.auto import tqdm

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TqdmLoggingHandler(logging.StreamHandler):
    """A ``StreamHandler`` (stderr by default) that writes each record with ``tqdm.write``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except RecursionError:  # as logging.StreamHandler does
            raise
        except Exception:
            self.handleError(record)


def setup_logging(is_main_process: bool) -> None:
    """INFO on the main process, warnings only elsewhere (so N processes do not print N copies), through
    :class:`TqdmLoggingHandler`. Logging that the program configured before (a root logger with handlers) is
    left as it is."""
    level = logging.INFO if is_main_process else logging.WARNING
    logging.basicConfig(format=LOG_FORMAT, datefmt="%H:%M:%S", level=level, handlers=[TqdmLoggingHandler()])
    logging.getLogger("hftransfer").setLevel(level)
    if not is_main_process:
        import datasets
        import transformers

        datasets.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
