"""Build hook: the wheel's SQL files ship without their comment lines.

Everything else about the build is in pyproject.toml. The comments of store/*.sql explain each statement
to whoever reads the repository; the engine drops them when it loads a file (``split_statements``), so
the copies in a wheel carry only the statements and the ``-- name:`` lines that label them, which keeps
the wheel under its size limit (tests/test_packaging.py). ``strip_sql_comments`` is tested to leave every
file's statements unchanged.
"""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_py import build_py


def strip_sql_comments(text: str) -> str:
    """``text`` without its whole-line ``--`` comments, except the ``-- name:`` labels of queries."""
    kept = []
    for line in text.splitlines(keepends=True):
        stripped = line.lstrip()
        if stripped.startswith("--") and not stripped.startswith("-- name:"):
            continue
        kept.append(line)
    return "".join(kept)


class BuildPyWithoutSqlComments(build_py):
    """build_py that strips the comment lines of the SQL files it copies into the build."""

    def build_package_data(self) -> None:
        super().build_package_data()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the repository's own files: leave them alone
        for _package, _source, build_dir, filenames in self.data_files:
            for name in filenames:
                if name.endswith(".sql"):
                    path = os.path.join(build_dir, name)
                    with open(path, encoding="utf-8") as file:
                        text = file.read()
                    with open(path, "w", encoding="utf-8") as file:
                        file.write(strip_sql_comments(text))


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import strip_sql_comments
    setup(cmdclass={"build_py": BuildPyWithoutSqlComments})
