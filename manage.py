#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    from chatsite.event_loop import EventLoopConfigError, install_event_loop_policy

    # Before Django starts: its app registry imports daphne, which makes the
    # chat server's loop on import.
    try:
        install_event_loop_policy()
    except EventLoopConfigError as exc:
        sys.exit(f"error: {exc}")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
