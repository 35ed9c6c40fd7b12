"""``python -m edgeclf``: the same as the ``edgeclf`` command (what the systemd unit runs)."""

from edgeclf.cli import main

if __name__ == "__main__":
    main()
