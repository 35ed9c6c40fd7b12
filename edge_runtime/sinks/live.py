"""``--serve [HOST:]PORT``: the newest result in a browser, served by ``edgeclf.serve``'s ``LiveServer``."""

from __future__ import annotations

import sys
import time
from typing import Sequence

from edgeclf.errors import safe_text
from edgeclf.model.classifier import Classifier
from edgeclf.model.providers import short_names
from edgeclf.predict.options import Result
from edgeclf.serve.auth import ENV_TOKEN
from edgeclf.serve.metrics import ServiceMetrics
from edgeclf.serve.server import LiveServer
from edgeclf.sinks.base import Sink, frame_number
from edgeclf.sources.base import Source


class LiveSink(Sink):
    """``--serve [HOST:]PORT``: the newest result in a browser (``serve.LiveServer``); closing it
    ends every stream and releases the port."""

    def __init__(self, server: LiveServer, numbered: bool, metrics: ServiceMetrics | None = None,
                 name: str = "source") -> None:
        self.server = server
        self.numbered = numbered
        self.metrics = metrics
        self.name = name  # the source's name in /metrics: never its path or URL (which may hold a password)

    @classmethod
    def start(cls, address: str, clf: Classifier, src: Source, top: int, allow_host: Sequence[str] = (),
              numbered: bool = True) -> LiveSink:
        """Bind ``address`` and start serving (saying where the API token is when it is open to
        the network)."""
        info = {
            "model": clf.path.name, "precision": clf.metadata.get("precision", "fp32"),
            "providers": short_names(clf.providers), "classes": clf.class_names,
            "source": src.spec, "source_kind": src.kind, "bars": max(top, min(5, len(clf.class_names))),
        }
        name = src.kind or "source"
        metrics = ServiceMetrics(model=clf.path.name)
        server = LiveServer(address, info=info, top=top, source_state=lambda: src.state,
                            stream_fps=min(src.fps or 25.0, 30.0), allow_hosts=allow_host, classifier=clf,
                            metrics=metrics, source_name=name)
        if server.exposed:
            print(token_notice(address, server), file=sys.stderr)
        server.start()
        print(f"edgeclf: live view at {server.url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        return cls(server, numbered, metrics, name)

    def write(self, result: Result) -> None:
        self.server.publish(result.frame.image, result.prediction, result.frame.source,
                            frame_number(result, self.numbered), result.latency_ms)
        if self.metrics is not None:
            self.metrics.frame(self.name, result.latency_ms / 1000)
            if result.prediction.unknown:
                self.metrics.unknown(self.name)

    def serve_until_interrupted(self, source: str) -> None:
        """The source has ended: keep its last result on show until Ctrl-C (or SIGTERM)."""
        self.server.mark_ended()
        print(f"edgeclf: {safe_text(source)}: no more frames; still serving {self.server.url} (Ctrl-C to stop)", file=sys.stderr)
        while True:
            time.sleep(3600)

    def close(self, keep: bool = True) -> None:
        self.server.close()


def token_notice(address: str, server: LiveServer) -> str:
    """Where the API token of an exposed server is, without the token itself (a terminal's
    scrollback and a service's journal are read by others)."""
    where = f"the file {server.token_file}" if server.token_file else f"${ENV_TOKEN}"
    return (f"edgeclf: --serve {address} is open to the network and needs the API token, which is in {where}: "
            f"open {server.url}?token=<token> once in a browser, or send 'Authorization: Bearer <token>'")
