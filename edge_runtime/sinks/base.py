"""The one interface of ``edgeclf predict``'s outputs. Every output is a ``Sink`` with one life cycle:

- opened from the command's options by ``open.open_sinks`` (as jetson-inference's ``videoOutput``
  picks its outputs from a URI), after ``open.check_sinks`` has checked them before the model loads;
- ``write(result)`` for every result, in order;
- ``close(keep=True)`` once the run ends or is interrupted: a file is finished and renamed into
  place whole (``OutputError`` if the disk filled up, and then nothing is left under its name);
  ``close(keep=False)`` after an error: a file's temporary is removed, never left half-written.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the hints only: the live server imports the sinks' formats, not predict's options
    from edgeclf.predict.options import Result



class Sink(ABC):
    """One output of ``edgeclf predict``: ``write`` every result, then ``close`` it once."""

    #: True once the user asked through this output to end the run (closed the window).
    stop_requested = False
    #: What ``close`` found worth a warning line; printed after a run that did not fail, so an
    #: error stays the one line a failed run prints.
    warning: str | None = None

    @abstractmethod
    def write(self, result: Result) -> None:
        """Send one result (a full disk raises ``OutputError``, having discarded the file)."""

    def close(self, keep: bool = True) -> None:
        """Finish the output (``keep``) or throw away what it wrote; a second call does nothing."""


def frame_number(result: Result, numbered: bool) -> int | None:
    """The frame number results show: none for photos (their name says which one it is)."""
    return result.frame.index if numbered else None
