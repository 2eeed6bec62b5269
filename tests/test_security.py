"""Security rules of DESIGN.md section 6, checked end to end: escaped reports, the code sandbox, API keys,
loopback-only servers, no pickle or remote code.

    .venv/bin/python -m pytest -q tests/test_security.py

Only 127.0.0.1 is ever contacted; nothing here trains or serves a model.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sqlite3
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from tests.harness.test_sandbox import MODES, listener  # noqa: F401 (fixture: a socket listening on 127.0.0.1)

ROOT = Path(__file__).resolve().parents[1]

# --- (a) model text is escaped in every report ---------------------------------------------------

SCRIPT = "<script>alert(1)</script>"
IFRAME = '<iframe src="javascript:alert(1)">'
IMG = "<img src=x onerror=alert(1)>"
SVG = '"><svg onload=alert(1)>'
LINK = "[x](javascript:alert(1))"
PIPES = "| pipes |"
LINES = "one\r# injected heading\r- injected item\n> injected quote"  # a lone CR ends a Markdown line too
PAYLOADS = [SCRIPT, IFRAME, IMG, SVG, LINK, PIPES]

BASE = "base" + SCRIPT                     # every place a name can reach carries a payload
CAND = "cand" + SVG
MODELS = [(BASE, "baseline", BASE, None), (CAND + "@s0", "candidate", CAND, 0), (CAND + "@s1", "candidate", CAND, 1)]
BENCH = "bench" + IMG
JUDGE = "llm/judge" + IFRAME               # llm/...: the suite's judge note shows beside its scores
CATEGORIES = ["writing" + IMG, "coding " + LINK, "maths " + PIPES]
SUITE = "suite" + IFRAME + LINES
GEN_KEY = "gen-1"

# Tags a report may contain: its own markup; any other tag came from model text.
HTML_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "nav", "a", "p", "ul", "li", "span",
             "table", "thead", "tbody", "tr", "th", "td", "details", "summary", "figure", "img", "figcaption", "div",
             "section"}
MD_TAGS = {"h1", "h2", "h3", "h4", "p", "ul", "li", "table", "thead", "tbody", "tr", "th", "td", "br", "img",
           "blockquote", "strong"}


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the page's text as a browser shows it."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _assert_markup_is_ours(page: _Tags, allowed: set[str], src_prefix: str, href_prefix: str) -> None:
    names = {t for t, _ in page.tags}
    assert names <= allowed, f"tags from model text: {sorted(names - allowed)}"
    for tag, attrs in page.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if "src" in attrs:
            assert (attrs["src"] or "").startswith(src_prefix), (tag, attrs)
        if "href" in attrs:
            assert (attrs["href"] or "").startswith(href_prefix), (tag, attrs)


def _payload_store(tmp_path: Path):
    """A store whose run names, questions, answers, judge outputs and metrics all carry payloads."""
    from fusion.common.hashing import digest
    from harness.analysis.results import record_results
    from harness.formats.questions import Question
    from harness.run.suite import GateSpec, JudgeSpec, Suite
    from harness.store import AnswerRow, JudgmentRow, Store, answer_key

    store = Store(tmp_path / "runs.db")
    questions = [Question(question_id=f"q{i}" + SCRIPT if i == 0 else i, category=CATEGORIES[i % 3],
                          turns=[f"Question {i} {SCRIPT} {IFRAME}", f"Follow-up {IMG} {LINK} {PIPES} {LINES}"])
                 for i in range(9)]
    qkeys = store.add_questions(BENCH, questions)
    # A merged candidate's diagnostics: its inputs are named by their directories.
    merged = tmp_path / "models" / "merged"
    merged.mkdir(parents=True)
    (merged / "fuseval_merge_weights.json").write_text(json.dumps(
        {f"layers.{k}.weight" + IMG: {"weights": [0.3 + 0.1 * k, 0.7 - 0.1 * k]} for k in range(2)}))
    (merged / "fuseval_recipe.yml").write_text(yaml.safe_dump(
        {"config": {"models": [{"model": str(tmp_path / ("in" + IMG))}, {"model": str(tmp_path / ("in" + SVG))}]}}))
    models = []
    for name, role, group, seed in MODELS:
        h = store.add_model(name, content_hash=digest("name", name))
        models.append({"name": name, "path": str(merged) if seed == 0 else "/ckpt/" + name, "hash": h, "role": role,
                       "group": group, "seed": seed, "kind": "merge" if seed == 0 else "model", "recipe": None})
        store.add_answers([AnswerRow(h, qkeys[q.question_id], 0, GEN_KEY,
                                     [f"{name} says {SCRIPT}\n{IFRAME}", f"{IMG} {SVG} {LINK}\n{PIPES} {LINES}"],
                                     meta={"backend": "openai" + SCRIPT}) for q in questions])
        store.add_judgments([JudgmentRow("single", JUDGE, "v1" + SCRIPT,
                                         answer_key(h, qkeys[q.question_id], 0, GEN_KEY), turn,
                                         score=float((i * 3 + turn + len(models)) % 10 + 1),
                                         detail={"explanation": f"Fine {SCRIPT} {SVG}", "raw": f"{IMG} Rating: [[5]]"})
                             for i, q in enumerate(questions) for turn in (1, 2)])
        store.add_metrics(None, h, "task" + SCRIPT + "@k1", [{"metric": "acc" + IMG, "value": 0.5, "stderr": 0.01}])
    suite = Suite(name="placeholder", benchmarks=["zoo"], judge=JudgeSpec(note="note " + SVG),
                  gate=GateSpec(baseline="placeholder", margin=0.5)).model_dump(mode="json")
    suite["name"], suite["gate"]["baseline"] = SUITE, BASE  # a suite file cannot hold these names; a store can
    # The run's config as harness.run.runner.run_suite records it, with a grid, seeds and an lm-eval bench.
    config = {"suite_file": str(tmp_path / ("suite" + IMG + ".yml")), "suite": suite, "backend": "openai",
              "workspace": str(tmp_path / ("ws" + SVG)), "models": models,
              "recipes": {CAND + "@s0": yaml.safe_dump({"config": {"merge_method": "ties" + SCRIPT, "models": [1, 2],
                                                                   "parameters": {"density" + IMG: SVG}}})},
              "benches": [{"name": BENCH, "judge_ids": [JUDGE], "lmeval": None, "lmeval_key": None,
                           "question_ids": [q.question_id for q in questions]},
                          {"name": "lm", "judge_ids": [], "lmeval": ["task" + SCRIPT], "lmeval_key": "k1",
                           "question_ids": []}],
              "grids": {"grid" + SCRIPT: {CAND: {"density" + IMG: "0.5" + SVG}}}, "gen_key": GEN_KEY,
              "counts": {"answered" + SCRIPT: 1}}
    runs = []
    for _ in range(2):  # two finished runs: the report draws the nightly trend
        run_id = store.start_run(suite=SUITE, config={"suite_file": config["suite_file"]})
        record_results(store, run_id, config)
        store.end_run(run_id, config=config)
        runs.append(run_id)
    return store, runs[-1]


@pytest.fixture(scope="module")
def payload_report(tmp_path_factory) -> dict[str, Path]:
    from harness.analysis.report import report_data
    from reports.render import render_report

    tmp = tmp_path_factory.mktemp("xss")
    store, run_id = _payload_store(tmp)
    with store:
        data = report_data(store, run_id, n_boot=200)
    assert data.gates and len(data.seeds) and data.ablations and len(data.metrics) and data.examples
    assert len(data.history) and data.merge_weights  # every section that prints names is drawn
    return render_report(data, tmp / "report")


def test_html_report_shows_model_text_as_text(payload_report):
    raw = payload_report["html"].read_text(encoding="utf-8")
    for tag in ("<script", "<iframe", "<svg", "<img src=x"):
        assert tag not in raw.lower()
    page = _Tags(raw)
    _assert_markup_is_ours(page, HTML_TAGS, "data:image/png;base64,", "#")
    text = "".join(page.text)
    for p in PAYLOADS + [BASE, CAND + "@s0", BENCH, JUDGE, CATEGORIES[0], "note " + SVG, "acc" + IMG,
                         "density" + IMG, "0.5" + SVG, "in" + IMG]:
        assert p in text, p  # shown, as the characters the model wrote


def _render_markdown(md: str) -> str:
    from markdown_it import MarkdownIt

    mdi = MarkdownIt("commonmark", {"html": True}).enable("table")
    mdi.validateLink = lambda url: True  # show every link a viewer without a URL filter would make
    return mdi.render(md)


def test_markdown_report_shows_model_text_as_text(payload_report):
    raw = payload_report["md"].read_text(encoding="utf-8")
    for tag in ("<script", "<iframe", "<svg", "<img"):
        assert tag not in raw
    assert not re.search(r"(?<!\\)\]\(javascript:", raw)  # the brackets are escaped: no link
    html = _render_markdown(raw)
    page = _Tags(html)
    _assert_markup_is_ours(page, MD_TAGS, "figures/", "\0")  # no link at all
    text = "".join(page.text)
    for p in PAYLOADS + [BASE, BENCH, JUDGE, "note " + SVG]:
        assert p in text, p
    # A pipe in model text stays inside its cell; a line break in it starts no heading, list or quote.
    assert any(PIPES in c for c in page.cells)
    assert "injected heading" in text and "injected item" in text
    assert len(re.findall(r"<h1>", html)) == 1
    assert not re.search(r"<h\d>[^<]*injected|<li>\s*injected|<blockquote>\s*<p>injected", html)


# --- (b) the code-execution judge reaches no network and writes nothing outside its directory ---------------


@pytest.fixture
def judge_code(monkeypatch):
    """Grade a model's answer with a `code` check, the way the programmatic judge does, in a chosen sandbox mode."""
    import functools

    from harness.formats.checks import CodeCheck
    from harness.judges import programmatic
    from harness.judges.programmatic import check_answer
    from harness.judges.sandbox import run_python

    def grade(program: str, tests: str = "pass", namespaces: bool | None = None):
        monkeypatch.setattr(programmatic, "run_python", functools.partial(run_python, namespaces=namespaces))
        return check_answer(CodeCheck(tests=tests, timeout_s=5), f"Here it is:\n```python\n{program}\n```\n")

    return grade


@pytest.mark.parametrize("ns", MODES)
def test_graded_code_cannot_reach_a_local_listener(judge_code, listener, ns):  # noqa: F811
    port = listener.getsockname()[1]
    program = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
               "s.sendall(b'stolen')\ndef f():\n    return 1\n")
    r = judge_code(program, "assert f() == 1", namespaces=ns)
    assert (r.score, r.passed) == (0.0, False) and "PermissionError" in r.detail
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected


# 192.0.2.1 is TEST-NET-1 and .invalid never resolves (RFC 5737, 6761): a broken sandbox would still reach nobody.
@pytest.mark.parametrize("ns", MODES)
@pytest.mark.parametrize("how", [
    "import socket\nsocket.getaddrinfo('fuseval-probe.invalid', 443)",
    "import socket\nsocket.gethostbyname('fuseval-probe.invalid')",
    "import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=1)",
    "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('192.0.2.1', 53))",
    "import urllib.request\nurllib.request.urlopen('http://192.0.2.1/', timeout=1)",
])
def test_graded_code_cannot_resolve_or_reach_outside(judge_code, how, ns):
    r = judge_code(how, namespaces=ns)
    assert r.score == 0.0 and "sandbox: socket." in r.detail, r.detail  # refused before any packet


@pytest.mark.skipif(len(MODES) < 2, reason="unprivileged network namespaces do not work here")
def test_network_namespace_alone_has_no_route_outside():
    from harness.judges.sandbox import run_python

    r = run_python("import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=2)", namespaces=True,
                   guard=False)
    assert r.returncode == 1 and "OSError" in r.stderr and "unreachable" in r.stderr.lower()


@pytest.mark.parametrize("ns", MODES)
def test_graded_code_writes_neither_beside_the_caller_nor_in_home(judge_code, tmp_path, ns):
    import pwd
    import uuid

    target = tmp_path / "planted.txt"
    r = judge_code(f"open({str(target)!r}, 'w').write('x')", namespaces=ns)
    assert r.score == 0.0 and "PermissionError" in r.detail
    # The user's home as the password database and this process's $HOME name it (the sandbox's HOME is its temp dir).
    name = f".fuseval-sandbox-probe-{uuid.uuid4().hex}"
    probes = {Path(pwd.getpwuid(os.getuid()).pw_dir) / name, Path.home() / name}
    try:
        for probe in probes:
            r = judge_code(f"open({str(probe)!r}, 'w').write('x')", namespaces=ns)
            assert r.score == 0.0 and "PermissionError" in r.detail, r.detail
        # `~` in the program is its own directory: writing there works and is gone afterwards.
        r = judge_code("import os\np = os.path.expanduser('~/dotfile')\nopen(p, 'w').write('x')\nprint(p)",
                       "assert os.path.exists(p) and os.getcwd() == os.path.dirname(p)", namespaces=ns)
        assert r.passed, r.detail
        assert not target.exists() and not any(p.exists() for p in probes)
    finally:
        for probe in probes:
            probe.unlink(missing_ok=True)


SECRET = "fuseval-fake-secret-5b1e0c"
SANDBOX_ENV = {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "MKL_NUM_THREADS"}  # what harness.judges.sandbox passes, all of it non-secret


def test_graded_code_sees_no_secret_of_the_parent_environment(judge_code, monkeypatch):
    from harness.judges.sandbox import run_python

    monkeypatch.setenv("FUSEVAL_FAKE_SECRET", SECRET)
    program = ("import os\ndef leaked():\n"
               f"    return [k for k, v in os.environ.items() if 'FUSEVAL' in k or {SECRET!r} in v]\n")
    r = judge_code(program, "assert leaked() == [], leaked()")
    assert r.passed, r.detail
    r = run_python("import json, os\nprint(json.dumps(dict(os.environ)))")
    env = json.loads(r.stdout)
    assert set(env) <= SANDBOX_ENV and SECRET not in r.stdout
    assert env["HOME"] == env["TMPDIR"] and os.path.basename(env["HOME"]).startswith("fuseval-sandbox-")


def test_graded_code_cannot_read_the_parents_environment_from_proc(tmp_path):
    """The parent's /proc/<pid>/environ holds the keys it started with: the sandbox must not open it."""
    program = ("import os\nout = []\nfor name in ('environ', 'cmdline', 'status'):\n"
               "    try:\n        out.append(open(f'/proc/{os.getppid()}/{name}', 'rb').read().decode('latin-1'))\n"
               "    except OSError as e:\n        out.append(type(e).__name__)\nprint(out)\n")
    script = ("import json, sys\nfrom harness.judges.sandbox import namespaces_available, run_python\n"
              "modes = [False] + ([True] if namespaces_available() else [])\n"
              "print(json.dumps([run_python(sys.argv[1], namespaces=ns).stdout for ns in modes]))\n")
    # A parent started with the secret in its environment, as `FUSEVAL_FAKE_SECRET=... fuseval run` would be.
    env = {**os.environ, "FUSEVAL_FAKE_SECRET": SECRET}
    r = subprocess.run([sys.executable, "-c", script, program], capture_output=True, text=True, timeout=60, cwd=ROOT,
                       env=env)
    assert r.returncode == 0, r.stderr
    outs = json.loads(r.stdout)
    assert outs and all(o.startswith("[") for o in outs), "the probe did not run"
    # Never print what was read: on failure it is this machine's real environment.
    assert not any(SECRET in o for o in outs), "the sandboxed program read the parent's environment from /proc"
    assert all(ast.literal_eval(o) == ["PermissionError"] * 3 for o in outs), "/proc of the parent was readable"


# --- (c) API keys come only from the environment and are never written ------------------------------------

KEY = "sk-fuseval-fake-7f3a9c2e1d"
KEY_VAR = "FUSEVAL_TEST_KEY"


def _key_pieces() -> list[bytes]:
    """The key and every 10-character piece of it: a key cut short still leaks."""
    return [KEY[i:i + 10].encode() for i in range(len(KEY) - 9)]


def _leaks(blob: bytes | str) -> list[str]:
    blob = blob.encode("utf-8", "replace") if isinstance(blob, str) else blob
    return [p.decode() for p in _key_pieces() if p in blob]


def _suite(tmp_path: Path, url: str, turns: list[list[str]]) -> Path:
    qdir = tmp_path / "questions"
    qdir.mkdir()
    cats = ["writing", "roleplay", "humanities"]
    (qdir / "question.jsonl").write_text("".join(
        json.dumps({"question_id": 81 + i, "category": cats[i % 3], "turns": t}) + "\n" for i, t in enumerate(turns)))
    endpoint = {"base_url": url, "api_key_env": KEY_VAR}
    suite = {"name": "keys", "baselines": [{"name": "pivot", "model": "served-pivot"}],
             "candidates": [{"name": "merged", "model": "served-merged"}],
             "benchmarks": [{"questions": str(qdir / "question.jsonl"), "judge": "llm"}],
             "backend": {"kind": "openai", **endpoint, "options": {"max_retries": 1, "backoff_s": 0.01}},
             "judge": {"model": "judge-x", "backend": "openai", **endpoint, "max_new_tokens": 64,
                       "options": {"max_retries": 0}},
             "generation": {"max_new_tokens": 32}, "examples": 2}
    path = tmp_path / "keys.yml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def _fuseval(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, KEY_VAR: KEY}
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)


def test_api_key_is_sent_and_written_nowhere(stub, tmp_path):
    import httpx

    url, state = stub
    suite = _suite(tmp_path, url, [["Write a haiku about keys.", "Now one about locks."],
                                   ["Pretend you are a locksmith."], ["Why do keys matter?"]])
    ws, db = tmp_path / "ws", tmp_path / "store" / "runs.db"
    # --debug: the most logging a user can ask for.
    run = _fuseval("--debug", "run", suite, "--workspace", ws, "--store", db, "--no-report", cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    report = _fuseval("report", "latest", "--store", db, cwd=ROOT)
    assert report.returncode == 0, report.stderr[-3000:]
    (html,) = ws.glob("reports/*/report.html")
    assert "pivot" in html.read_text() and "merged" in html.read_text()

    seen = httpx.get(url.rsplit("/", 1)[0] + "/stats", timeout=5).json()
    assert seen["requests"] >= 8  # 2 models x 4 turns answered, then judged
    assert set(seen["auth"]) == {f"Bearer {KEY}"}  # every request, answers and verdicts, carried the key

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"runs.db", "report.html", "report.md"}
    found = {str(p.relative_to(tmp_path)): leaks for p in files if (leaks := _leaks(p.read_bytes()))}
    for name, stream in (("run stdout", run.stdout), ("run stderr", run.stderr), ("report stdout", report.stdout),
                         ("report stderr", report.stderr)):
        if leaks := _leaks(stream):
            found[name] = leaks
    assert not found, f"the API key was written: {found}"
    with sqlite3.connect(db) as con:  # the run's recorded config names the variable, never its value
        config = con.execute("SELECT config FROM runs").fetchone()[0]
    assert KEY_VAR in config and not _leaks(config)


def test_an_error_that_echoes_the_key_is_redacted(stub, tmp_path):
    url, _ = stub
    # The stub answers `status:400 ...` with the message echoed, as a server quoting a bad key does. The key falls
    # across the 300 characters an HTTP error keeps: redacting after the cut would leave most of it.
    pad = 300 - len('{"error": "stub rejected: status:400 ') - len(KEY) + 6
    suite = _suite(tmp_path, url, [[f"status:400 {'x' * (pad - 1)} {KEY}"], ["Why do keys matter?"]])
    ws, db = tmp_path / "ws", tmp_path / "runs.db"
    r = _fuseval("run", suite, "--workspace", ws, "--store", db, cwd=ROOT)
    assert r.returncode == 1 and "HTTP 400" in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "***" in r.stderr and not _leaks(r.stdout + r.stderr), r.stderr[-600:]
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT status FROM runs").fetchall() == [("failed",)]
    for p in ws.rglob("*"):  # the workspace holds no copy of the question, so no key at all
        assert not (p.is_file() and _leaks(p.read_bytes())), p


def test_backend_errors_redact_the_key_wherever_it_is_cut(stub, monkeypatch):
    from harness.backends import ChatRequest, GenParams, OpenAIBackend, OpenAIOptions

    url, _ = stub
    monkeypatch.setenv(KEY_VAR, KEY)
    b = OpenAIBackend(OpenAIOptions(base_url=url, model="served-pivot", api_key_env=KEY_VAR, max_retries=0))
    texts = [f"status:400 {'x' * n} {KEY}" for n in range(230, 300, 3)]  # the key before, across and after the cut
    with b:
        res = b.generate([ChatRequest([{"role": "user", "content": t}], GenParams(max_new_tokens=4)) for t in texts])
    assert all(r.error and r.error.startswith("HTTP 400") for r in res)
    assert not [r.error[-40:] for r in res if _leaks(r.error)]
    assert "***" in res[0].error and KEY not in repr(b)


# --- (d) servers bind to 127.0.0.1 unless the user asks otherwise ----------------------------------------


def test_vllm_server_binds_to_loopback_by_default(tmp_path):
    from harness.backends.vllm_server import VLLMOptions, VLLMServer

    assert VLLMOptions().host == "127.0.0.1"
    server = VLLMServer(tmp_path / "model", "served", VLLMOptions(enforce_eager=True), tmp_path / "logs")
    server.port = 8123
    cmd = server.command()
    assert cmd.count("--host") == 1 and cmd[cmd.index("--host") + 1] == "127.0.0.1"


def test_a_served_model_listens_on_loopback_only(tmp_path):
    import psutil

    from harness.backends import VLLMBackend, VLLMOptions

    stub_server = [sys.executable, str(ROOT / "tests" / "harness" / "stub_openai.py")]  # stands in for vLLM
    b = VLLMBackend("stub-model", VLLMOptions(startup_timeout_s=30, request_timeout_s=10), log_dir=tmp_path / "logs",
                    command=stub_server)
    with b:
        proc = psutil.Process(b.server.proc.pid)
        conns = proc.net_connections(kind="inet") if hasattr(proc, "net_connections") else proc.connections("inet")
        listening = [c for c in conns if c.status == psutil.CONN_LISTEN]
        assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}
        assert [c.laddr.port for c in listening] == [b.server.port]


# --- (e) no pickle and no remote code unless the user opts in -----------------------------------------------

SCANNED = ("fusion", "harness", "reports", "benchmarks")
PICKLERS = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "marshal", "shelve"}
# torch.load runs only here: CheckpointReader._load_pickle, reached only with --allow-pickle, weights_only=True.
TORCH_LOAD_OPT_IN = {("fusion/io/reader.py", "_load_pickle")}


def _calls(path: Path):
    """A file's tree, the top-level modules it imports, and (call, enclosing function name) for each call."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    imports, calls = set(), []

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                imports.update(a.name.split(".")[0] for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                imports.add(child.module.split(".")[0])
            elif isinstance(child, ast.Call):
                calls.append((child, func))
            visit(child, child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func)

    visit(tree, None)
    return tree, imports, calls


def _dotted(node) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def _kw(call: ast.Call, name: str):
    """The keyword's constant value; ... when it is not a constant; None when it is not given."""
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else ...
    return None


def test_no_pickle_loading_or_remote_code_outside_the_opt_in_paths():
    problems = []
    files = sorted(p for d in SCANNED for p in (ROOT / d).rglob("*.py")  # not caches such as benchmarks/perf/.cache
                   if not any(part.startswith(".") for part in p.relative_to(ROOT).parts))
    assert len(files) > 30
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        tree, imports, calls = _calls(path)
        safe_loaders = {"SafeLoader", "CSafeLoader"} | {  # and this file's subclasses of them
            c.name for c in ast.walk(tree) if isinstance(c, ast.ClassDef)
            and any(_dotted(b).split(".")[-1] in ("SafeLoader", "CSafeLoader") for b in c.bases)}
        problems += [f"{rel}: imports {m}" for m in imports & PICKLERS]
        for call, func in calls:
            name, where = _dotted(call.func), f"{rel}:{call.lineno} ({func})"
            if _kw(call, "trust_remote_code") not in (None, False):
                problems.append(f"{where}: trust_remote_code is not False")
            if name in ("eval", "exec"):
                problems.append(f"{where}: {name}() of text outside the sandbox")
            if name.endswith(("read_pickle", "Unpickler")):
                problems.append(f"{where}: {name}")
            if name == "torch.load" and ((rel, func) not in TORCH_LOAD_OPT_IN or _kw(call, "weights_only") is not True):
                problems.append(f"{where}: torch.load outside the --allow-pickle path or without weights_only=True")
            if name in ("np.load", "numpy.load") and _kw(call, "allow_pickle") not in (None, False):
                problems.append(f"{where}: np.load with allow_pickle")
            if name.startswith("yaml.") and name.split(".")[-1] in ("unsafe_load", "full_load", "unsafe_load_all",
                                                                  "full_load_all", "load_all"):
                problems.append(f"{where}: {name}")
            if name == "yaml.load":
                loader = next((_dotted(k.value).split(".")[-1] for k in call.keywords if k.arg == "Loader"), None)
                if loader not in safe_loaders:
                    problems.append(f"{where}: yaml.load without a SafeLoader")
    assert not problems, "\n".join(problems)


def test_the_pickle_opt_in_path_is_guarded():
    """The one torch.load refuses a .bin checkpoint unless --allow-pickle, and loads with weights_only=True."""
    src = (ROOT / "fusion" / "io" / "reader.py").read_text(encoding="utf-8")
    fn = next(n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.FunctionDef) and n.name == "_load_pickle")
    body = ast.get_source_segment(src, fn)
    assert body.index("if not allow_pickle") < body.index("torch.load(") and "weights_only=True" in body


def test_remote_code_stays_off_where_models_and_tokenizers_load(tmp_path):
    """The transformers backend says False itself; lm-eval's hf model gets no override of its default, False."""
    import importlib.util

    from harness.run.lmeval import _model

    hf = ast.parse((ROOT / "harness" / "backends" / "hf.py").read_text(encoding="utf-8"))
    loads = [c for c in ast.walk(hf) if isinstance(c, ast.Call) and _dotted(c.func).endswith("from_pretrained")
             and "ForCausalLM" in _dotted(c.func)]
    assert loads and all(_kw(c, "trust_remote_code") is False and _kw(c, "use_safetensors") is True for c in loads)
    (tmp_path / "config.json").write_text("{}")
    kind, args = _model(tmp_path, "transformers", None, None)
    assert kind == "hf" and args.get("trust_remote_code", False) is False
    spec = importlib.util.find_spec("lm_eval")
    if spec is None:
        pytest.skip("lm-eval is not installed")
    src = Path(spec.submodule_search_locations[0], "models", "huggingface.py")
    init = next(n for n in ast.walk(ast.parse(src.read_text(encoding="utf-8")))
                if isinstance(n, ast.FunctionDef) and n.name == "__init__")  # HFLM's, the first in the file
    names = [a.arg for a in init.args.args[-len(init.args.defaults):]] + [a.arg for a in init.args.kwonlyargs]
    defaults = list(init.args.defaults) + list(init.args.kw_defaults)
    default = dict(zip(names, defaults))["trust_remote_code"]
    assert isinstance(default, ast.Constant) and default.value is False
