"""Build the compiled modules: ``fastmetrics._core`` (decode, store, formatting kernels) and
``fastmetrics._render`` (the API's long-list renderers).

``FASTMETRICS_NO_EXTENSIONS=1`` at build time skips the extension (pure Python install);
``FASTMETRICS_DEBUG=1`` builds with bounds checks, line tracing and ``FM_DEBUG`` invariants.
"""

import os
import sys

from setuptools import Extension, setup

NO_EXTENSIONS = os.environ.get("FASTMETRICS_NO_EXTENSIONS", "") not in ("", "0")
DEBUG = os.environ.get("FASTMETRICS_DEBUG", "") not in ("", "0")


def extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    import numpy
    from Cython.Build import cythonize

    macros = [("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")]
    directives = {
        "language_level": "3",
        "embedsignature": True,
        "boundscheck": DEBUG,
        "wraparound": DEBUG,
        "initializedcheck": DEBUG,
        "cdivision": True,
    }
    if DEBUG:
        macros += [("FM_DEBUG", "1"), ("CYTHON_TRACE_NOGIL", "1")]
        directives["linetrace"] = True
        cflags = ["-O0", "-g"]
    else:
        macros += [("FM_DEBUG", "0")]
        cflags = ["-O3"]
    exts = [
        Extension(
            f"fastmetrics.{name}",
            [f"src/fastmetrics/{name}.pyx"],
            include_dirs=[numpy.get_include(), "src/fastmetrics"],
            define_macros=macros,
            extra_compile_args=cflags,
        )
        for name in ("_core", "_render")
    ]
    return cythonize(exts, compiler_directives=directives, quiet=True)


exts = extensions()
print(
    "*** fastmetrics: "
    + ("Pure Python build (FASTMETRICS_NO_EXTENSIONS)" if not exts else "Accelerated build (Cython)")
    + (" [debug]" if DEBUG and exts else ""),
    file=sys.stderr,
)
setup(ext_modules=exts)
