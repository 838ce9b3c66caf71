"""A real Emacs (Debian's emacs-nox with elpa-eglot) running the README's eglot snippet against the fake model."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.model_server import FakeModelServer, RequestRecord

ROOT = Path(__file__).resolve().parents[2]
README_ENDPOINT = "http://127.0.0.1:11434"

# Helpers every driver script starts with: eglot from Debian's elpa directory, polling instead of sleeping, and
# the result written as JSON for the test to assert on.
_PRELUDE = r"""
(setq debug-on-error t
      inhibit-message nil
      make-backup-files nil
      create-lockfiles nil
      eglot-events-buffer-size 2000000
      ;; jsonrpc's default of 10 s per request is tight for a CI machine running browsers beside this test.
      jsonrpc-default-request-timeout 30)
(require 'package)
(package-initialize)
(require 'eglot)
(require 'json)
(defvar hapa-test-result nil)
(defvar hapa-test-t0 nil)
(defun hapa-test-put (key value) (setq hapa-test-result (cons (cons key value) hapa-test-result)))
(defun hapa-test-wait (what pred &optional timeout)
  "Run the event loop until PRED is non-nil; signal WHAT after TIMEOUT seconds."
  (let ((deadline (+ (float-time) (or timeout 20))) (value nil))
    (while (and (not (setq value (funcall pred))) (< (float-time) deadline))
      (accept-process-output nil 0.05))
    (or value (error "Timed out waiting for %s" what))))
(defun hapa-test-open (path)
  "Visit PATH in python-mode and connect hapa-lsp to it the way M-x eglot does."
  (find-file path)
  (python-mode)
  (apply #'eglot (eglot--guess-contact))
  (hapa-test-wait "hapa-lsp to connect"
                  (lambda () (let ((s (eglot-current-server)))
                               (and s (jsonrpc-running-p s) (eglot--server-capable :completionProvider)))))
  (hapa-test-put 'server (plist-get (eglot--server-info (eglot-current-server)) :name)))
(defun hapa-test-finish (file)
  (when (getenv "HAPA_TEST_EVENTS")
    (with-current-buffer (jsonrpc-events-buffer (eglot-current-server))
      (write-region (point-min) (point-max) (getenv "HAPA_TEST_EVENTS"))))
  (with-temp-file file (insert (json-encode hapa-test-result)))
  (ignore-errors (eglot-shutdown (eglot-current-server)))
  (kill-emacs 0))
"""


def _readme_snippet() -> str:
    """The eglot configuration exactly as the README's Emacs section gives it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Emacs (eglot)", 1)[1]
    match = re.search(r"```elisp\n(.*?)```", section, re.S)
    assert match, "README's Emacs section has no ```elisp block"
    snippet = match.group(1)
    assert README_ENDPOINT in snippet and '"hapa-lsp"' in snippet, snippet
    return snippet


def _emacs_or_skip() -> str:
    emacs = shutil.which("emacs")
    if emacs is None:
        pytest.skip("emacs is not installed (.ci/run installs Debian's emacs-nox and elpa-eglot)")
    probe = subprocess.run([emacs, "--batch", "--eval", "(progn (require 'package) (package-initialize) "
                                                         "(princ (if (require 'eglot nil t) \"yes\" \"no\")))"],
                           capture_output=True, text=True, timeout=30)
    if probe.stdout.strip() != "yes":
        pytest.skip("eglot is not installed for emacs (.ci/run installs Debian's elpa-eglot)")
    return emacs


@pytest.fixture
def fake() -> Iterator[FakeModelServer]:
    server = FakeModelServer.run_in_thread(model="qwen2.5-coder:1.5b-base")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def run_emacs(fake: FakeModelServer, tmp_path: Path) -> Callable[[str], dict[str, Any]]:
    """Run Emacs in batch with the README's snippet (pointed at the fake) and ``body``; return what it recorded."""
    emacs = _emacs_or_skip()
    home = tmp_path / "home"
    home.mkdir()
    # `hapa-lsp` from PATH, as the README says: the console script of this environment.
    bindir = str(Path(sys.executable).parent)
    assert shutil.which("hapa-lsp", path=bindir), f"hapa-lsp is not installed in {bindir} (pip install -e .)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HAPA_", "AI_MODEL_", "EMACS")) or k == "HAPA_TEST_EVENTS"}
    env.update({
        "PATH": bindir + os.pathsep + env.get("PATH", ""),
        "HOME": str(home),  # Emacs, eglot and hapa-lsp keep their files in the test's directory
        "XDG_STATE_HOME": str(home), "XDG_DATA_HOME": str(home), "XDG_CONFIG_HOME": str(home),
        "XDG_CACHE_HOME": str(home),
        "HAPA_COMPLETION_DEBOUNCE_MS": "0",
        "HAPA_COMPLETION_MAX_DEBOUNCE_MS": "0",
        "HAPA_SIDECAR_PORT": "0",  # tests run in parallel
    })
    snippet = _readme_snippet().replace(README_ENDPOINT, fake.url)

    def run(body: str) -> dict[str, Any]:
        out = tmp_path / "result.json"
        script = tmp_path / "drive.el"
        script.write_text(_PRELUDE + snippet + "\n(progn\n" + body + f"\n(hapa-test-finish {json.dumps(str(out))}))\n",
                          encoding="utf-8")
        proc = subprocess.run([emacs, "--batch", "-l", str(script)], cwd=tmp_path, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and out.exists(), \
            f"emacs exited with {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        return json.loads(out.read_text(encoding="utf-8"))

    return run


@pytest.mark.timeout(120)
def test_completion_at_point_offers_jedis_names_and_the_ai_item(run_emacs, fake, tmp_path):
    fake.script(lambda req: "th.join('a', 'b')")
    (tmp_path / "paths.py").write_text("")
    result = run_emacs("""
      (hapa-test-open "paths.py")
      (goto-char (point-max))
      (insert "import os\\nos.pa")
      ;; Batch Emacs has no idle time, which is when eglot sends didChange by itself.
      (eglot--signal-textDocument/didChange)
      ;; jedi's first answer in a fresh environment can take longer than hapa-lsp waits for it (10 s) on a busy
      ;; CI machine; one request first, its answer ignored, so the list below is the one of a warm server.
      (setq hapa-test-t0 (float-time))
      (ignore-errors (jsonrpc-request (eglot-current-server) :textDocument/completion (eglot--CompletionParams)
                                      :timeout 60))
      (hapa-test-put 'warmup-seconds (- (float-time) hapa-test-t0))
      (setq hapa-test-t0 (float-time))
      ;; What M-TAB (completion-at-point) asks: the first function of completion-at-point-functions that answers.
      (let* ((capf (run-hook-wrapped 'completion-at-point-functions
                                     (lambda (f) (let ((r (funcall f))) (and (consp r) r)))))
             (start (nth 0 capf)) (end (nth 1 capf)) (table (nth 2 capf))
             (cands (all-completions (buffer-substring-no-properties start end) table)))
        (hapa-test-put 'capf (and (memq 'eglot-completion-at-point completion-at-point-functions) t))
        (hapa-test-put 'seconds (- (float-time) hapa-test-t0))
        (hapa-test-put 'prefix (buffer-substring-no-properties start end))
        (hapa-test-put 'candidates (vconcat cands))
        (hapa-test-put 'annotations
                       (vconcat (mapcar (lambda (c) (or (funcall (plist-get (nthcdr 3 capf) :annotation-function) c)
                                                        ""))
                                        cands))))
      ;; Then the command itself, as a user runs it: several candidates, so it lists them in *Completions*.
      (completion-at-point)
      (hapa-test-put 'listed (with-current-buffer "*Completions*" (buffer-substring-no-properties
                                                                    (point-min) (point-max))))
    """)
    assert result["server"] == "hapa-lsp"
    print(f"first completion {result['warmup-seconds']:.1f} s, then {result['seconds']:.2f} s")
    assert result["capf"] is True and result["prefix"] == "pa"
    cands = result["candidates"]
    assert "path" in cands and "pardir" in cands, cands  # jedi's names, served by hapa-lsp
    ai = [c for c, a in zip(cands, result["annotations"]) if "hapa AI" in a]
    assert ai == ["path.join('a', 'b')"], (cands, result["annotations"])
    listed = result["listed"]
    assert "pardir" in listed and "path.join('a', 'b')" in listed, listed
    prompt = next(r for r in fake.requests if r.prompt is not None).prompt
    assert "import os\nos.pa" in prompt  # eglot's didChange notifications are what the prompt was built from


@pytest.mark.timeout(120)
def test_eglot_code_actions_lists_and_applies_the_generate_action(run_emacs, fake, tmp_path):
    asked_before_menu = []

    def answer(req: RequestRecord) -> str:
        if req.messages is None:  # completions while the file is open: nothing to suggest
            return ""
        asked_before_menu.append(not (tmp_path / "menu-shown").exists())
        return ("```python\ndef dedupe(items):\n    seen = set()\n"
                "    return [x for x in items if not (x in seen or seen.add(x))]\n```")

    fake.script(answer)
    (tmp_path / "listutil.py").write_text("# remove duplicates from a list, keep order\n")
    result = run_emacs("""
      (hapa-test-open "listutil.py")
      (goto-char (+ (point-min) 5))
      ;; M-x eglot-code-actions from the keyboard: the menu is a completing-read; record it and pick "Generate".
      ;; The chosen action runs as a command whose edit eglot confirms with y-or-n-p: record it and say yes.
      (let ((last-nonmenu-event ?\\r))
        (cl-letf (((symbol-function 'completing-read)
                   (lambda (_prompt collection &rest _)
                     (let ((titles (mapcar #'car collection)))
                       (hapa-test-put 'menu (vconcat titles))
                       (write-region "" nil "menu-shown")
                       (or (seq-find (lambda (title) (string-match-p "Generate" title)) titles)
                           (error "no Generate action in %S" titles)))))
                  ((symbol-function 'y-or-n-p)
                   (lambda (prompt) (hapa-test-put 'confirm prompt) t)))
          (call-interactively #'eglot-code-actions)))
      (hapa-test-wait "the generated function in the buffer"
                      (lambda () (string-match-p "def dedupe" (buffer-string))))
      (hapa-test-put 'text (buffer-substring-no-properties (point-min) (point-max)))
      (save-buffer)
    """)
    assert result["menu"][0] == "hapa: Generate code from comment", result["menu"]
    assert len(result["menu"]) > 1
    # The menu comes without a generation for each of its actions: the model runs once, for the one picked.
    assert asked_before_menu == [False]
    assert "listutil.py" in result.get("confirm", "listutil.py"), result
    expected = ("# remove duplicates from a list, keep order\n"
                "def dedupe(items):\n"
                "    seen = set()\n"
                "    return [x for x in items if not (x in seen or seen.add(x))]\n")
    assert result["text"] == expected
    assert (tmp_path / "listutil.py").read_text() == expected
    chat = [r for r in fake.requests if r.messages is not None]
    assert len(chat) == 1 and "remove duplicates from a list" in json.dumps(chat[0].messages)


def _readme_next_edit_command() -> str:
    """The README's `hapa-next-edit` command (the Next edit suggestions section), exactly as given."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Next edit suggestions", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```elisp\n(.*?)```", section, re.S)
    assert match and "(defun hapa-next-edit" in match.group(1), "README's next-edit section has no elisp command"
    return match.group(1)


@pytest.mark.timeout(120)
def test_the_readme_next_edit_command_applies_the_next_use_and_reports_the_accept(run_emacs, fake, tmp_path):
    from tests.fakes.next_edit_rule import next_edit_answer

    fake.script(next_edit_answer)
    (tmp_path / "geo.py").write_text("def area(count, scale):\n    x = 1\n    return count * 2 * scale\n")
    result = run_emacs(_readme_next_edit_command() + """
      (hapa-test-open "geo.py")
      ;; The user renames `count` to `total` at the def, the cursor after the new name.
      (goto-char (point-min))
      (search-forward "count")
      (replace-match "total")
      (eglot--signal-textDocument/didChange)
      (cl-letf (((symbol-function 'y-or-n-p) (lambda (prompt) (hapa-test-put 'asked prompt) t)))
        (call-interactively #'hapa-next-edit))
      (hapa-test-put 'text (buffer-substring-no-properties (point-min) (point-max)))
      (eglot--signal-textDocument/didChange)
      (hapa-test-wait "the server to count the accept"
                      (lambda () (let ((s (jsonrpc-request (eglot-current-server) :workspace/executeCommand
                                                           '(:command "hapa.stats" :arguments []))))
                                   (hapa-test-put 'accepted (plist-get s :accepted))
                                   (eql (plist-get s :accepted) 1))))
    """)
    assert result["asked"] == 'hapa next edit, line 3: "count" -> "total"? ', result
    assert result["text"] == "def area(total, scale):\n    x = 1\n    return total * 2 * scale\n"
    assert result["accepted"] == 1
