"""``--serve [HOST:]PORT``: the newest result in a browser, served by ``edgeclf.serve``'s ``LiveServer``."""

from __future__ import annotations

import sys
import time
from typing import Sequence

from edgeclf.errors import safe_text
from edgeclf.model.classifier import Classifier
from edgeclf.model.providers import short_names
from edgeclf.predict.options import Result
from edgeclf.serve.server import LiveServer
from edgeclf.sinks.base import Sink, frame_number
from edgeclf.sources.base import Source


class LiveSink(Sink):
    """``--serve [HOST:]PORT``: the newest result in a browser (``serve.LiveServer``); closing it
    ends every stream and releases the port."""

    def __init__(self, server: LiveServer, numbered: bool) -> None:
        self.server = server
        self.numbered = numbered

    @classmethod
    def start(cls, address: str, clf: Classifier, src: Source, top: int, allow_host: Sequence[str] = (),
              numbered: bool = True) -> LiveSink:
        """Bind ``address`` and start serving (with a warning when it is open to the network)."""
        info = {
            "model": clf.path.name, "precision": clf.metadata.get("precision", "fp32"),
            "providers": short_names(clf.providers), "classes": clf.class_names,
            "source": src.spec, "source_kind": src.kind, "bars": max(top, min(5, len(clf.class_names))),
        }
        server = LiveServer(address, info=info, top=top, source_state=lambda: src.state,
                            stream_fps=min(src.fps or 25.0, 30.0), allow_hosts=allow_host)
        if server.exposed:
            print(f"warning: --serve {address}: the live view is open to anyone who can reach this machine "
                  "on the network (no password); use 127.0.0.1 to keep it on this machine", file=sys.stderr)
        server.start()
        print(f"edgeclf: live view at {server.url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        return cls(server, numbered)

    def write(self, result: Result) -> None:
        self.server.publish(result.frame.image, result.prediction, result.frame.source,
                            frame_number(result, self.numbered), result.latency_ms)

    def serve_until_interrupted(self, source: str) -> None:
        """The source has ended: keep its last result on show until Ctrl-C (or SIGTERM)."""
        self.server.mark_ended()
        print(f"edgeclf: {safe_text(source)}: no more frames; still serving {self.server.url} (Ctrl-C to stop)", file=sys.stderr)
        while True:
            time.sleep(3600)

    def close(self, keep: bool = True) -> None:
        self.server.close()
