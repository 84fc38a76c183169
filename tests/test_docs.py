"""Every `python <script>.py ...` command that README.md, docs/ and results/README.md show parses as written.

A renamed or removed flag otherwise leaves the docs wrong without any test noticing. Each command goes through bash's
own expansion (globs, `$(...)`), then through the script's parser, and for a training script through `resolve_args`
(env id, presets, coefficient checks). Nothing is trained or evaluated: the commands are parsed, not run.
"""

import glob
import importlib
import re
import shlex
import subprocess
import sys

import pytest
import tyro
from runs import REPO

import benchmark

DOCS = ["README.md", "results/README.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))]
TOOLS = {"eval_smoothness", "critic_geometry", "plot_qfield"}


def documented_commands():
    """(doc, command line) for every command that runs one of the repository's scripts: each such line of a ```bash
    block, and each inline `python <script>.py ...` (the README's scripts table)."""
    found = []
    for doc in DOCS:
        text = (REPO / doc).read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            for var, first in re.findall(r"\bfor (\w+) in (\S+)", block):  # a loop's commands, with its first value
                block = block.replace(f"${var}", first)
            found += [(doc, line.strip()) for line in block.replace("\\\n", " ").splitlines()
                      if re.search(r"\bpython \w+\.py\b", line)]
        found += [(doc, span) for span in re.findall(r"(?<!`)`(python \w+\.py[^`]*)`", text)]
    return list(dict.fromkeys(found))


def expand(line):
    """The script and its arguments after bash's own expansion of the rest of the line (quotes, globs, `$(...)`,
    comments), as the user's shell would pass them to python."""
    command = line[line.index("python ") + len("python "):]
    result = subprocess.run(["bash", "-c", f"printf '%s\\0' {command}"], cwd=REPO, capture_output=True, text=True,
                            check=True)
    script, *argv = result.stdout.rstrip("\0").split("\0")
    return script, argv


def parse(script, argv):
    """Parse argv as `python <script> argv` would, stopping before any training, evaluation or publishing."""
    name = script.removesuffix(".py")
    if name in ("benchmark", "publish"):
        args = benchmark.parse_command(argv if name == "benchmark" else ["publish", *argv])
        if args.command == "throughput":
            for entry in args.scripts:
                inner, *flags = shlex.split(entry)
                parse(inner, flags)
        elif args.command == "threads":
            for script in args.scripts:
                parse(script, [*shlex.split(args.extra), "--torch-threads", str(max(args.threads))])
        elif args.command == "publish":
            assert (REPO / args.study / "runs").is_dir(), f"--study {args.study}: no runs/ folder"
        elif args.command == "denormals":  # the checkpoints it names are published ones
            assert all(glob.glob(str(REPO / pattern)) for pattern in args.checkpoints), args.checkpoints
        else:
            runs = {(run.variant, run.env_id): run for run in benchmark.build_study(args).runs}
            for run in runs.values():  # each variant and env's command, as the study would start it, through its script
                parse(run.variant.script, run.arguments(shlex.split(args.extra)))
        return
    module = importlib.import_module(name)
    args = tyro.cli(module.Args, args=argv)
    if name not in TOOLS and not args.resume:  # a training script: the checks it makes before building anything
        module.resolve_args(args)


@pytest.mark.parametrize(("doc", "line"), documented_commands())
def test_a_documented_command_parses(doc, line):
    script, argv = expand(line)
    assert (REPO / script).is_file(), f"{doc}: {script} is not a script of the repository"
    try:
        parse(script, argv)
    except SystemExit as stop:  # argparse, tyro and the scripts' checks exit with their message on stderr
        if stop.code == 0 and "--help" in argv:
            return
        pytest.fail(f"{doc}: `{line}` does not parse (exit {stop.code})")


def test_the_docs_show_commands_of_every_script():
    shown = {expand(line)[0] for _, line in documented_commands()}
    scripts = {p.name for p in REPO.glob("*.py") if 'if __name__ == "__main__":' in p.read_text()}  # not the modules
    assert scripts <= shown, f"scripts no doc shows a command for: {sorted(scripts - shown)}"


def test_method_page_shows_the_current_diff_of_td3_and_td3_pave():
    """docs/method.md's ```diff block is `diff -u td3.py td3_pave.py` as the files are now, short enough to read."""
    diff = subprocess.run(["diff", "-u", "td3.py", "td3_pave.py"], cwd=REPO, capture_output=True, text=True).stdout
    (shown,) = re.findall(r"```diff\n(.*?)\n```", (REPO / "docs/method.md").read_text(), re.S)
    assert shown.splitlines()[2:] == diff.splitlines()[2:]  # the two header lines carry file times
    assert len(diff.splitlines()) < 220 and "+def pave_regularizer(" in diff


def test_method_pages_own_code_example_runs(tmp_path):
    """The "PAVE in your own code" example (a 3-layer LayerNorm critic) runs as a user would paste it, with
    pave_regularizer copied in, from another folder, with nothing of the repository's importable but torch."""
    import inspect

    import td3_pave

    text = (REPO / "docs/method.md").read_text()
    (example,) = re.findall(r"```python\n(.*?)```", text[text.index("## PAVE in your own code"):], re.S)[:1]
    marker = "# paste pave_regularizer here, copied from td3_pave.py (it needs only torch and F)\n"
    assert marker in example
    blocked = "import sys\nsys.modules.update(gymnasium=None, tyro=None, td3_pave=None)\n"
    example = blocked + example.replace(marker, inspect.getsource(td3_pave.pave_regularizer))
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'curv'" in result.stdout and "'mpr'" in result.stdout
    assert "0.0000" not in result.stdout and "e-" in result.stdout  # small terms readable, not rounded to zero
