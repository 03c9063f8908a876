"""Generates the gRPC stubs from the repository's proto/ while the package is built.

The stubs are never committed: `pip install clients/python` runs grpcio-tools over
`../../proto/proto/ckpt/v1/checkpoint.proto` and places the result in the built package as
`checkpointd._pb`, so the Python client always speaks the API of the tree it was built from.
"""

import shutil
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PROTO = HERE.parent.parent / "proto" / "proto" / "ckpt" / "v1" / "checkpoint.proto"
# Where the generated modules live inside the package.
STUB_PACKAGE = ("checkpointd", "_pb")


def generate_stubs(out_dir: Path) -> None:
    """Runs protoc (from grpcio-tools) into `out_dir`/checkpointd/_pb."""
    from grpc_tools import protoc  # a build requirement, imported only when building

    if not PROTO.is_file():
        raise SystemExit(f"checkpointd: {PROTO} not found; build from a checkout of the repository")
    with tempfile.TemporaryDirectory() as tmp:
        # Copied under the stub package's path so the generated imports name our package.
        source = Path(tmp).joinpath(*STUB_PACKAGE, "checkpoint.proto")
        source.parent.mkdir(parents=True)
        shutil.copyfile(PROTO, source)
        includes = Path(protoc.__file__).parent / "_proto"
        args = [
            "grpc_tools.protoc",
            f"-I{tmp}",
            f"-I{includes}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(source),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"checkpointd: protoc failed on {PROTO}")
    out_dir.joinpath(*STUB_PACKAGE, "__init__.py").write_text(
        '"""Stubs generated from checkpoint.proto at build time."""\n'
    )


class BuildWithStubs(build_py):
    """build_py, plus the generated stubs in the build tree."""

    def run(self) -> None:
        super().run()
        generate_stubs(Path(self.build_lib))


setup(cmdclass={"build_py": BuildWithStubs})
