"""A real RTSP camera stand-in for the tests: GStreamer's RTSP server (gst-rtsp-server, Debian's
gir1.2-gst-rtsp-server-1.0) serving a live test pattern as RTP/JPEG on loopback.

ffmpeg cannot serve RTSP to a player (its RTSP output only pushes to a server, and its listen
mode only receives), so the server runs in Debian's system Python, which has the GStreamer
bindings, as a child process: ``python3 rtsp_server.py PORT FPS``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mjpeg_server import ServerProcess

SYSTEM_PYTHON = "/usr/bin/python3"
CHECK = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"


def available() -> bool:
    """Whether the system Python has GStreamer's RTSP server bindings."""
    if not Path(SYSTEM_PYTHON).exists():
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", CHECK], capture_output=True, timeout=30).returncode == 0


class RtspServer(ServerProcess):
    """``rtsp://127.0.0.1:PORT/x``: a live pattern at ``fps``, started and stopped on demand."""

    name = "GStreamer RTSP server"

    def __init__(self, port: int, fps: int = 25, size: tuple[int, int] = (160, 120)) -> None:
        super().__init__(port)
        self.fps, self.size = fps, size

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/x"

    def command(self) -> list[str]:
        return [SYSTEM_PYTHON, __file__, str(self.port), str(self.fps), *map(str, self.size)]


def _serve(port: int, fps: int, width: int, height: int) -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width={width},height={height},framerate={fps}/1 "
        "! jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory("/x", factory)
    server.attach(None)
    GLib.MainLoop().run()


if __name__ == "__main__":
    _serve(*map(int, sys.argv[1:5]))
