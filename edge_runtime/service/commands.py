"""What ``edgeclf serve`` and ``edgeclf service install|uninstall`` do, behind the CLI's thin shell."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from edgeclf.comms.webhook import shown_url
from edgeclf.errors import safe_text
from edgeclf.redact import redact_url
from edgeclf.service.config import ServiceConfig, load_config


def describe(cfg: ServiceConfig) -> dict[str, Any]:
    """The checked config as ``serve --check --json`` prints it: no secret, URLs' passwords masked."""
    return {
        "config": str(cfg.path), "model": cfg.model, "provider": cfg.provider, "threads": cfg.threads, "batch": cfg.batch,
        "sources": [{"name": s.name, "uri": redact_url(s.uri), "debounce_frames": s.debounce_frames,
                     "debounce_seconds": s.debounce_seconds, "smooth": s.smooth, "unknown": s.unknown,
                     "timeout": s.timeout, "realtime": s.realtime} for s in cfg.sources],
        "server": None if cfg.server is None else {"listen": cfg.server.listen, "token": cfg.server.token is not None},
        "mqtt": None if cfg.mqtt is None else {"host": cfg.mqtt.host, "port": cfg.mqtt.port, "tls": cfg.mqtt.tls,
                                               "prefix": cfg.mqtt.prefix, "node_id": cfg.mqtt.node_id,
                                               "username": cfg.mqtt.username, "password": cfg.mqtt.password is not None},
        "webhooks": [shown_url(w.url) for w in cfg.webhooks],
    }


def run_serve(config: Path, check: bool = False, json_out: bool = False) -> int:
    """``edgeclf serve CONFIG``: run until SIGTERM/Ctrl-C; with ``check``, validate the config (and
    that the model loads) and exit. Returns the exit code."""
    from edgeclf.service.runner import Service, publishers_for, run_forever, source_rule

    cfg = load_config(config)
    if check:
        from edgeclf.service.runner import check_listen, open_model

        clf = open_model(cfg, lambda _: None, threads=1)  # the file and engine start() runs
        for s in cfg.sources:  # what the service would refuse at start, as it would say it
            source_rule(clf, cfg, s)
        check_listen(cfg)
        publishers_for(cfg, Path(cfg.model).name)  # built, not started: nothing connects
        info = describe(cfg)
        if json_out:
            print(json.dumps({"ok": True, **info}))
        else:
            names = ", ".join(s["name"] for s in info["sources"])
            print(f"{safe_text(config)}: ok: {safe_text(cfg.model)} on {len(cfg.sources)} source(s) ({safe_text(names)})")
        return 0
    publishers = publishers_for(cfg, Path(cfg.model).name)
    service = Service(cfg, publishers=publishers)
    stats = run_forever(service)
    print(f"edgeclf serve: {stats.frames} frames in {stats.seconds:.1f} s, {len(stats.changes)} state change(s)",
          file=sys.stderr)
    return 0


def run_install(config: Path, user: bool, force: bool, name: str | None, json_out: bool) -> None:
    """``edgeclf service install``: check the config, write the unit, say how to enable it."""
    from edgeclf.service import unit

    load_config(config)  # a unit that fails at every start helps nobody
    path = unit.install(config, user=user, force=force, name=name)
    if json_out:
        print(json.dumps({"unit": str(path), "name": path.name, "user": user}))
        return
    print(f"edgeclf: wrote {safe_text(path)}", file=sys.stderr)
    print(unit.enable_instructions(path.name, user=user))


def run_uninstall(what: str, user: bool, json_out: bool) -> None:
    from edgeclf.service import unit

    path = unit.uninstall(what, user=user)
    if json_out:
        print(json.dumps({"removed": str(path)}))
        return
    print(f"edgeclf: removed {safe_text(path)}", file=sys.stderr)
    print(unit.uninstall_instructions(path.name, user=user))
