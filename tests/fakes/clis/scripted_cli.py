"""A stand-in for a provider CLI that misbehaves on cue, for the runners' failure tests.

The real CLIs cover the happy paths and the failures a model server can cause;
this script covers what only a broken or hostile CLI does: hang, ignore
SIGTERM, flood stdout, crash mid-stream, ask an interactive question, leave a
child behind, print garbage.

It runs the steps in the JSON file named by ``FAKE_CLI_SCRIPT``, in order:

- ``{"out": text}`` / ``{"err": text}``: a line on stdout / stderr (``"times": n``
  repeats a stdout line);
  ``{"out_raw": text}`` / ``{"err_raw": text}``: the same without the newline;
- ``{"sleep": seconds}``; ``{"hang": true}``: sleep for ever;
- ``{"exit": code}``; ``{"kill_self": "SEGV"}``: die of that signal;
- ``{"ignore_term": true}``: ignore SIGTERM from now on;
- ``{"spawn": argv}``: start a child sharing stdout/stderr (it holds the pipes);
- ``{"flood_line": n}``: ``n`` bytes of ``x`` without a newline;
- ``{"flood_noise": true}``: endless non-JSON lines;
- ``{"save_stdin": path}``, ``{"save_argv": path}``, ``{"save_env": path}``:
  record what the CLI was given (stdin is read to its end);
- ``{"copy_arg_file": flag, "to": path}``: copy the file named by the argument
  after ``flag``; ``{"copy_env_file": name, "to": path}``: the file named by
  the environment variable ``name``;
- ``{"wait_for_file": path}``: block until ``path`` exists.

The last step's effect ends the run; after the steps it exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


def main() -> None:
    with open(os.environ["FAKE_CLI_SCRIPT"]) as handle:
        steps = json.load(handle)
    out, err = sys.stdout.buffer, sys.stderr.buffer
    for step in steps:
        if "out" in step or "out_raw" in step:
            data = step.get("out", step.get("out_raw", "")).encode() + (b"\n" if "out" in step else b"")
            for _ in range(step.get("times", 1)):
                out.write(data)
            out.flush()
        elif "err" in step or "err_raw" in step:
            err.write(step.get("err", step.get("err_raw", "")).encode() + (b"\n" if "err" in step else b""))
            err.flush()
        elif "sleep" in step:
            time.sleep(step["sleep"])
        elif "hang" in step:
            while True:
                time.sleep(3600)
        elif "exit" in step:
            out.flush()
            os._exit(step["exit"])
        elif "kill_self" in step:
            out.flush()
            os.kill(os.getpid(), getattr(signal, "SIG" + step["kill_self"]))
        elif "ignore_term" in step:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        elif "spawn" in step:
            subprocess.Popen(step["spawn"])
        elif "flood_line" in step:
            block = b"x" * 65536
            left = step["flood_line"]
            while left > 0:
                out.write(block[:left])
                left -= len(block)
            out.flush()
        elif "flood_noise" in step:
            line = b"noise " * 20 + b"\n"
            while True:
                out.write(line)
        elif "save_stdin" in step:
            with open(step["save_stdin"], "wb") as handle:
                handle.write(sys.stdin.buffer.read())
        elif "save_argv" in step:
            with open(step["save_argv"], "w") as handle:
                json.dump(sys.argv[1:], handle)
        elif "save_env" in step:
            with open(step["save_env"], "w") as handle:
                json.dump(dict(os.environ), handle)
        elif "copy_arg_file" in step:
            args = sys.argv[1:]
            source = args[args.index(step["copy_arg_file"]) + 1]
            with open(source, "rb") as src, open(step["to"], "wb") as dst:
                dst.write(src.read())
        elif "copy_env_file" in step:
            with open(os.environ[step["copy_env_file"]], "rb") as src, open(step["to"], "wb") as dst:
                dst.write(src.read())
        elif "wait_for_file" in step:
            while not os.path.exists(step["wait_for_file"]):
                time.sleep(0.01)
        else:
            raise SystemExit(f"unknown step {step!r}")


if __name__ == "__main__":
    main()
