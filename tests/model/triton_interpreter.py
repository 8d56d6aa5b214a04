"""Test code run in Triton's interpreter, which executes kernels on CPU tensors.

``TRITON_INTERPRET`` is read when Triton is imported, hence a process of its own.
"""

import os
import subprocess
import sys
import textwrap


def run_in_triton_interpreter(script: str) -> str:
    """Run the Python source ``script`` with ``TRITON_INTERPRET=1``; its standard output.

    The test folder is importable from the script. A failing script fails the calling test
    with the end of its error output.
    """
    environment = {
        **os.environ,
        "TRITON_INTERPRET": "1",
        "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), *sys.path]),
    }
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
