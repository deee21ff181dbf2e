"""A stand-in for ``vcgencmd`` that replays recorded outputs: ``vcgencmd.py DIR [--throttled NAME] COMMAND``.

Prints ``DIR/COMMAND.txt`` (for get_throttled, ``DIR/get_throttled-NAME.txt`` when
``--throttled NAME`` is given); exits 1 with vcgencmd's own message for a command
it has no recording of, as the real one does for a command the firmware lacks.
"""
import os
import sys


def main(argv):
    folder, rest = argv[0], argv[1:]
    variant = ""
    if rest[:1] == ["--throttled"]:
        variant, rest = "-" + rest[1], rest[2:]
    command = rest[0] if rest else ""
    name = command + (variant if command == "get_throttled" else "") + ".txt"
    path = os.path.join(folder, name)
    if not command or not os.path.isfile(path):
        sys.stderr.write("Command not registered\n")
        return 1
    with open(path, encoding="utf-8") as fh:
        sys.stdout.write(fh.read())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
