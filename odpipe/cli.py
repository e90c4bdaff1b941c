"""The ``odpipe`` command: one entry point, one module per subcommand (``odpipe.predict``,
``odpipe.video.track``), each also runnable as ``python -m <module>``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS = {  # name: (module with a main(argv), what it does)
    "predict": (
        "odpipe.predict",
        "detections for images (class maps for a segmenter, top classes for a classifier): JSON/CSV",
    ),
    "track": ("odpipe.video.track", "detect, track and count objects in a video, a folder of frames or a stream"),
}


def usage() -> str:
    lines = ["usage: odpipe COMMAND [ARGS...]   (odpipe COMMAND --help for its arguments)", "", "commands:"]
    return "\n".join(lines + [f"  {name:8s} {text}" for name, (_, text) in COMMANDS.items()])


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
    return importlib.import_module(COMMANDS[args[0]][0]).main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
