"""Builds the optional C helpers; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # fused byte-plane loops; without a compiler the NumPy code runs instead
        Extension(
            "mvcstore._kernels",
            sources=["mvcstore/_kernels.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
