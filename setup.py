"""Builds nczip._cext. Only here because compiler flags differ between MSVC and gcc/clang.

The flags matter for correctness, not speed: the CDF quantizer must give bit-identical integers
on every machine, so floating-point contraction (FMA) and fast-math reassociation are off.
"""
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCES = [
    "cext/rangecoder.c", "cext/cdf.c", "cext/ensemble.c", "cext/head.c", "cext/team.c", "cext/module.c",
    # the engine (cext/engine.h)
    "cext/eng_math.c", "cext/eng_matmul.c", "cext/eng_attn.c", "cext/eng_pool.c", "cext/eng_model.c",
    "cext/eng_gemma3.c", "cext/py_engine.c",
]


class DeterministicBuildExt(build_ext):
    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            flags = ["/O2", "/fp:precise"]
        else:
            flags = ["-O3", "-std=c99", "-ffp-contract=off", "-fno-fast-math", "-Wall"]
        for ext in self.extensions:
            ext.extra_compile_args = flags
        super().build_extensions()


setup(
    ext_modules=[Extension("nczip._cext", SOURCES, include_dirs=["cext"])],
    cmdclass={"build_ext": DeterministicBuildExt},
)
