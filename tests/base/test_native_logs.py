"""Quiet by default: the pass log native code writes to stderr while a predictor is built is dropped, every
other line written meanwhile still arrives, and ``--verbose`` / INSPECTOR_VERBOSE=1 keeps everything; the
command line sets the glog level before paddle is imported and leaves a level the user chose alone."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

# Writes through file descriptor 2 as C++ std::cerr does, inside and outside the filtered block.
_WRITER = textwrap.dedent("""
    import os, sys
    from inspector.native_logs import pass_log_filtered
    os.write(2, b"before\\n")
    try:
        with pass_log_filtered():
            os.write(2, b"\\x1b[37m---    quantized 70 fused_conv2d ops \\x1b[0m\\n")
            os.write(2, b"--- Running IR pass [cpu_quantize_pass]\\n")
            os.write(2, b"I1204 18:02:20.317425 19128 analysis_predictor.cc:1234] optimized\\n")
            os.write(2, b"W1204 18:02:20.317425 19128 place.cc:99] a warning stays\\n")
            print("python line stays", file=sys.stderr)
            os.write(2, b"a line from another thread stays\\n")
            if sys.argv[1] == "raise":
                raise RuntimeError("predictor failed")
    finally:
        os.write(2, b"after\\n")
""")


def _run(mode: str, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "INSPECTOR_VERBOSE"}
    return subprocess.run([sys.executable, "-c", _WRITER, mode], capture_output=True, text=True,
                          env={**environment, **env}, timeout=60)


def test_pass_log_dropped_everything_else_kept_in_order():
    result = _run("ok")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "before",
        "W1204 18:02:20.317425 19128 place.cc:99] a warning stays",
        "python line stays",
        "a line from another thread stays",
        "after",
    ]


def test_failure_inside_still_reported_and_stderr_restored():
    result = _run("raise")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert "a line from another thread stays" in lines
    assert "quantized 70" not in result.stderr
    assert lines[-1] == "RuntimeError: predictor failed"  # the traceback comes after fd 2 is back
    assert "after" in lines


def test_verbose_keeps_the_pass_log():
    result = _run("ok", INSPECTOR_VERBOSE="1")
    assert result.returncode == 0, result.stderr
    assert "---    quantized 70 fused_conv2d ops" in result.stderr
    assert "--- Running IR pass [cpu_quantize_pass]" in result.stderr
    assert "analysis_predictor.cc:1234] optimized" in result.stderr


_CLI_ENV = textwrap.dedent("""
    import os, sys
    from typer.testing import CliRunner
    from inspector.cli import app
    result = CliRunner().invoke(app, sys.argv[1:] + ["data", "check", "--help"])
    assert result.exit_code == 0, result.output
    assert "paddle" not in sys.modules  # the levels are set before paddle loads
    print(os.environ.get("GLOG_minloglevel"), os.environ.get("INSPECTOR_VERBOSE"))
""")


def _cli_env(*args: str, **env: str) -> str:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("INSPECTOR_VERBOSE", "GLOG_minloglevel")}
    result = subprocess.run([sys.executable, "-c", _CLI_ENV, *args], capture_output=True, text=True,
                            env={**environment, **env}, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_command_line_quiet_by_default_verbose_on_request():
    assert _cli_env() == "2 None"
    assert _cli_env("--verbose") == "None 1"
    assert _cli_env(INSPECTOR_VERBOSE="1") == "None 1"
    assert _cli_env(GLOG_minloglevel="0") == "0 None"  # a level the user set is kept


def test_paddle_self_warnings_hidden_errors_kept():
    script = textwrap.dedent("""
        import warnings
        from inspector.native_logs import quiet_native_logs
        quiet_native_logs(False)
        import paddle.static.io as paddle_io
        paddle_io._logger.warning("The old way to load inference model is deprecated.")
        paddle_io._logger.error("a paddle error stays")
        warnings.warn_explicit("paddle about itself", UserWarning, "x.py", 1, module="paddle.utils.x")
        warnings.warn("ours stays", UserWarning)
    """)
    environment = {key: value for key, value in os.environ.items() if key != "INSPECTOR_VERBOSE"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**environment, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "a paddle error stays" in result.stderr and "ours stays" in result.stderr
    assert "old way" not in result.stderr and "paddle about itself" not in result.stderr
