"""The optional native exit path (vmmio/_fastpath.c): built where a C compiler exists, skipped otherwise.

Everything else is in pyproject.toml; vmmio runs the same without the extension (docs/fastpath.md).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "vmmio._fastpath",
            ["vmmio/_fastpath.c"],
            optional=True,  # no compiler, or it fails: install anyway, pure Python
            extra_compile_args=["-O2"],
        )
    ]
)
