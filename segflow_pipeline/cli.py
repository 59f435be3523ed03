"""The `segflow` command."""
import sys


def main(argv: list[str] | None = None) -> int:
    print("segflow: not ready yet", file=sys.stderr)
    return 1
