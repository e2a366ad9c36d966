"""Files the tests write for the subprocesses they start."""

import os


def write_once(path, text):
    """Write ``text`` to ``path`` unless it exists, atomically (a temporary file, then
    ``os.replace``). Rewriting a script in place while a child started earlier is still opening
    it lets that child read an empty file and exit 0 having run nothing."""
    if not os.path.exists(path):
        partial = f"{path}.{os.getpid()}.tmp"
        with open(partial, "w") as handle:
            handle.write(text)
        os.replace(partial, path)
    return path
