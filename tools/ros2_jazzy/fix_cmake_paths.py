"""Point the ROS 2 wheels' exported CMake files at this interpreter's Python and NumPy headers.

The wheels were built under ``/opt/python/cp311-cp311``; their generated ``*Export.cmake``
files name that interpreter's include folders, which do not exist here, so any package
generating Python message bindings fails to configure. Rewrites them in place (idempotent).
"""

import sys
import sysconfig
from pathlib import Path

import numpy

BUILDER = "/opt/python/cp311-cp311"


def main(prefix: str) -> int:
    replacements = {
        f"{BUILDER}/include/python3.11": sysconfig.get_paths()["include"],
        f"{BUILDER}/lib/python3.11/site-packages/numpy/_core/include": numpy.get_include(),
    }
    changed = 0
    for path in (Path(prefix) / "share").glob("*/cmake/*.cmake"):
        text = path.read_text(errors="surrogateescape")
        if BUILDER not in text:
            continue
        new = text
        for old, local in replacements.items():
            new = new.replace(old, local)
        if new != text:
            path.write_text(new, errors="surrogateescape")
            changed += 1
    print(f"fix_cmake_paths: {changed} CMake file(s) pointed at {sys.executable}'s headers")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else sys.prefix))
