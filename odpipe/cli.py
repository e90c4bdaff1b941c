"""The ``odpipe`` command: one entry point, one module per subcommand (``odpipe.predict``,
``odpipe.track``), each also runnable as ``python -m odpipe.<command>``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS = {
    "predict": "detections for images (class maps for a segmenter, top classes for a classifier): JSON/CSV",
    "track": "detect, track and count objects in a video, a folder of frames or a stream",
}


def usage() -> str:
    lines = ["usage: odpipe COMMAND [ARGS...]   (odpipe COMMAND --help for its arguments)", "", "commands:"]
    return "\n".join(lines + [f"  {name:8s} {text}" for name, text in COMMANDS.items()])


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(usage(), file=sys.stderr)
        return 2
    if args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if args[0] not in COMMANDS:
        print(f"odpipe: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    # Imported on demand: TensorFlow's start-up is paid only by the command that needs it.
    return importlib.import_module(f"odpipe.{args[0]}").main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
