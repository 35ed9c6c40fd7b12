"""The webhook publisher against a real HTTP server on loopback: payload, retries and back-off,
timeouts, newest-wins, re-sending after an outage, a dead URL, and credentials kept out of logs."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edgeclf.comms.base import StateEvent
from edgeclf.comms.webhook import WebhookOptions, WebhookPublisher
from edgeclf.errors import EdgeclfError


class Hook:
    """A loopback HTTP server that records POSTs; it answers 500 to the first ``fail`` of them,
    waits ``hang`` seconds before answering, or redirects when ``redirect`` is set."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.fail = 0
        self.hang = 0.0
        self.redirect: str | None = None
        self.release = threading.Event()  # ends a hang at teardown
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.requests.append({"t": time.monotonic(), "path": self.path, "headers": dict(self.headers),
                                      "json": json.loads(body)})
                if hook.hang:
                    hook.release.wait(hook.hang)
                if hook.redirect:
                    self.send_response(302)
                    self.send_header("Location", hook.redirect)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                failing = hook.fail > 0
                hook.fail -= failing
                self.send_response(500 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def labels(self) -> list[tuple[str, str]]:
        return [(r["json"]["source"], r["json"]["label"]) for r in self.requests]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


def wait_for(pred, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.01)


def ev(label: str, source: str = "door", **kw) -> StateEvent:
    return StateEvent(source=source, label=label, score=0.91234, time=1_700_000_000.25, model="m1",
                      previous=kw.pop("previous", None), frame=kw.pop("frame", 7), **kw)


def make(url: str, log: list, **kw) -> WebhookPublisher:
    return WebhookPublisher(WebhookOptions(url, **kw), log=log.append).start(["door", "gate"])


def test_posts_the_payload_as_json(hook):
    log: list[str] = []
    pub = make(hook.url, log, headers={"X-Token": "t0k"}, snapshot=True)
    pub.publish(ev("open", previous="closed", snapshot=b"\xff\xd8jpeg"))
    wait_for(lambda: pub.stats["sent"] == 1)
    pub.close()
    (req,) = hook.requests
    assert req["path"] == "/hook"
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["headers"]["X-Token"] == "t0k"
    body = req["json"]
    assert {k: body[k] for k in ("source", "label", "previous", "score", "model", "frame", "unknown")} == {
        "source": "door", "label": "open", "previous": "closed", "score": 0.9123, "model": "m1", "frame": 7,
        "unknown": False}
    assert body["time"].startswith("2023-11-14T22:13:20.250")
    assert base64.b64decode(body["snapshot_jpeg"]) == b"\xff\xd8jpeg"
    assert pub.stats == {"sent": 1, "dropped": 0, "failed": 0, "reconnects": 0}
    assert log == []


def test_retries_with_exponential_backoff(hook):
    hook.fail = 2
    log: list[str] = []
    pub = make(hook.url, log, retries=3, backoff=0.1)
    pub.publish(ev("open"))
    wait_for(lambda: pub.stats["sent"] == 1)
    pub.close()
    times = [r["t"] for r in hook.requests]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.09 and times[2] - times[1] >= 0.19  # 0.1 s, then 0.2 s
    assert pub.stats["failed"] == 0 and log == []


def test_gives_up_after_retries_then_resends_when_the_url_recovers(hook):
    hook.fail = 10**6
    log: list[str] = []
    pub = make(hook.url, log, retries=2, backoff=0.02, resend_after=60)
    pub.publish(ev("open"))
    wait_for(lambda: pub.stats["failed"] == 1)
    assert len(hook.requests) == 3  # the first try and 2 retries
    pub.publish(ev("x", source="gate"))  # a dead URL: more failures, no more log lines
    wait_for(lambda: pub.stats["failed"] == 2)
    shown = hook.url.rsplit("/", 1)[0] + "/***"  # the path of a webhook is often its secret: masked
    assert len(log) == 1 and "HTTP 500" in log[0] and shown in log[0] and "/hook" not in log[0]
    hook.fail = 0
    pub.publish(ev("y", source="gate"))
    # the URL accepts gate's new state: door's current state, which failed, goes again
    wait_for(lambda: ("door", "open") in hook.labels()[6:])
    wait_for(lambda: pub.stats["sent"] == 2)
    pub.close()
    assert hook.labels()[6:] == [("gate", "y"), ("door", "open")]
    assert pub.stats["reconnects"] == 1
    assert len(log) == 2 and "accepts events again" in log[1]


def test_failed_state_is_resent_on_its_own_after_resend_after(hook):
    hook.fail = 1
    log: list[str] = []
    pub = make(hook.url, log, retries=0, resend_after=0.2)
    pub.publish(ev("open"))
    wait_for(lambda: pub.stats["sent"] == 1)  # no new event: the timer sent it again
    pub.close()
    assert hook.labels() == [("door", "open"), ("door", "open")]
    assert pub.stats["reconnects"] == 1 and pub.stats["failed"] == 1


def test_timeout(hook):
    hook.hang = 3.0
    log: list[str] = []
    pub = make(hook.url, log, timeout=0.3, retries=0)
    start = time.monotonic()
    pub.publish(ev("open"))
    wait_for(lambda: pub.stats["failed"] == 1)
    assert time.monotonic() - start < 2.5
    pub.close()
    assert len(log) == 1 and "timed out" in log[0]


def test_a_newer_state_cuts_the_retries_short(hook):
    hook.fail = 1
    log: list[str] = []
    pub = make(hook.url, log, retries=3, backoff=3.0)
    pub.publish(ev("open"))
    wait_for(lambda: len(hook.requests) == 1)
    start = time.monotonic()
    pub.publish(ev("closed", previous="open"))
    wait_for(lambda: pub.stats["sent"] == 1)
    assert time.monotonic() - start < 2.0  # not after the 3 s back-off
    pub.close()
    assert hook.labels() == [("door", "open"), ("door", "closed")]
    assert pub.stats == {"sent": 1, "dropped": 1, "failed": 0, "reconnects": 0}


def test_unreachable_url_logs_one_line_and_goes_on():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    log: list[str] = []
    pub = make(f"http://127.0.0.1:{port}/hook", log, retries=1, backoff=0.01, resend_after=60)
    for i in range(3):
        t0 = time.monotonic()
        pub.publish(ev(f"s{i}", source=["door", "gate"][i % 2]))
        assert time.monotonic() - t0 < 0.05  # the frame loop's side never waits
        wait_for(lambda: pub.stats["failed"] == i + 1)
    pub.close()
    assert len(log) == 1 and "refused" in log[0].lower()


def test_redirects_are_not_followed(hook):
    hook.redirect = f"http://127.0.0.1:{hook.port}/elsewhere"
    log: list[str] = []
    pub = make(hook.url, log, retries=0, headers={"Authorization": "Bearer s3cret-token"})
    pub.publish(ev("open"))
    wait_for(lambda: pub.stats["failed"] == 1)
    pub.close()
    assert [r["path"] for r in hook.requests] == ["/hook"]
    assert "HTTP 302" in log[0] and "s3cret-token" not in log[0]


def test_credentials_in_the_url_are_sent_but_never_shown(hook):
    hook.fail = 10**6
    log: list[str] = []
    url = f"http://u:secret@127.0.0.1:{hook.port}/hook"
    opts = WebhookOptions(url, retries=0, headers={"X-Key": "k3y"})
    pub = WebhookPublisher(opts, log=log.append).start(["door"])
    pub.publish(ev("open"))
    wait_for(lambda: pub.stats["failed"] == 1)
    pub.close()
    auth = hook.requests[0]["headers"]["Authorization"]
    assert base64.b64decode(auth.split()[1]) == b"u:secret"
    assert len(log) == 1 and "u:***@127.0.0.1" in log[0]
    for text in (*log, repr(pub), repr(opts)):
        assert "secret" not in text and "k3y" not in text


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "file:///etc/passwd", "127.0.0.1:80/x", "http:///nohost",
                                 "http://u:pw-xyz@host:notaport/", "http://127.0.0.1:99999/x", "http://127.0.0.1:0/x"])
def test_bad_urls_are_one_line_errors(url):
    with pytest.raises(EdgeclfError) as e:
        WebhookPublisher(WebhookOptions(url))
    assert "\n" not in str(e.value) and "pw-xyz" not in str(e.value)


def test_a_peer_that_does_not_speak_http_is_a_failure_and_the_thread_goes_on(hook):
    """A 'web hook' that answers garbage (no status line) makes http.client raise BadStatusLine:
    one failure, one log line, and the next event still goes out once the peer is a web server."""
    garbage = socket.socket()
    garbage.bind(("127.0.0.1", 0))
    garbage.listen(4)

    def answer() -> None:
        for _ in range(2):
            try:
                conn, _ = garbage.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"garbage here\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    log: list[str] = []
    pub = make(f"http://127.0.0.1:{garbage.getsockname()[1]}/hook", log, retries=0, resend_after=60)
    pub.publish(ev("open"))
    wait_for(lambda: pub.stats["failed"] == 1)
    assert len(log) == 1 and "not an HTTP reply (BadStatusLine" in log[0]
    assert pub._thread.is_alive()  # the delivery thread survived it
    pub.publish(ev("closed"))
    wait_for(lambda: pub.stats["failed"] == 2)
    pub.close()
    garbage.close()


@pytest.mark.parametrize("headers, words", [({"X-Evil": "a\r\nInjected: 1"}, "X-Evil's value holds a control character"),
                                            ({"Bad Header": "v"}, "'Bad Header' is not a valid HTTP header name"),
                                            ({"X\n": "v"}, "is not a valid HTTP header name"),
                                            ({"X-Token": "s\u00e9cr\u20act"}, "X-Token's value holds a control character (a line break?) "
                                                                       "or a character outside Latin-1")])
def test_headers_that_no_request_can_carry_are_refused(headers, words):
    with pytest.raises(EdgeclfError) as e:
        WebhookPublisher(WebhookOptions("http://127.0.0.1:1/x", headers=headers))
    assert words in str(e.value) and "Injected" not in str(e.value) and "\u20ac" not in str(e.value) and "\n" not in str(e.value)


def test_any_exception_in_a_delivery_is_one_failure_not_the_threads_end():
    """Whatever a client library raises for an odd peer, the delivery thread counts a failure,
    says it once, and keeps delivering."""
    from edgeclf.comms.base import Publisher

    class Flaky(Publisher):
        kind = "flaky"

        def __init__(self, log) -> None:
            super().__init__(log)
            self.calls = 0

        def _open(self, sources) -> None: ...
        def _shut(self) -> None: ...
        def _ready(self) -> bool: return True
        def _failed(self, event, error) -> None: self.log(f"failed: {error}")

        def _deliver(self, event) -> None:
            self.calls += 1
            if self.calls == 1:
                raise KeyError("something no one expected")

    log: list[str] = []
    pub = Flaky(log.append).start(["door"])
    pub.publish(ev("open"))
    wait_for(lambda: pub.stats["failed"] == 1)
    pub.publish(ev("closed"))
    wait_for(lambda: pub.stats["sent"] == 1)
    pub.close()
    assert log == ["failed: KeyError: 'something no one expected'"]
