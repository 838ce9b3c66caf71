"""Validation of generated code: syntax errors located, dangerous constructs flagged, safe code left alone."""

from __future__ import annotations

import pytest

from hapa_lsp.validation import validate


def rules(code: str) -> list[str]:
    return [i.rule for i in validate(code).issues]


def test_valid_code_passes_without_issues():
    report = validate("def dedupe(xs):\n    return list(dict.fromkeys(xs))\n")
    assert report.parses and report.checked and report.issues == []
    assert report.to_dict()["valid"] is True


def test_syntax_error_is_located_zero_based():
    report = validate("def f(:\n    pass\n")
    assert not report.parses
    assert report.syntax_error is not None and report.syntax_error.line == 0
    assert "line 1" in report.syntax_error.describe()
    assert report.to_dict()["syntax_error"]["line"] == 0


@pytest.mark.parametrize("code,rule", [
    ("x = eval(input())\n", "dynamic-eval"),
    ("exec(user_code)\n", "dynamic-eval"),
    ("import os\nos.system('rm -rf ' + path)\n", "os-command"),
    ("import subprocess\nsubprocess.run(cmd, shell=True)\n", "shell-true"),
    ("from subprocess import Popen\nPopen(cmd, shell=True)\n", "shell-true"),
    ("import pickle\nobj = pickle.loads(data)\n", "unsafe-deserialization"),
    ("import pickle as pk\nobj = pk.loads(data)\n", "unsafe-deserialization"),
    ("API_KEY = 'a8f5f167f44f4964e6c998dee827110c'\n", "hardcoded-secret"),
    ("db = connect(password='hunter2hunter2')\n", "hardcoded-secret"),
    ("token = 'ghp_abcdefghijklmnopqrstuvwxyz0123456789'\n", "hardcoded-secret"),
    ("cfg = {'client_secret': 's3cr3t-value-123'}\n", "hardcoded-secret"),
])
def test_dangerous_constructs_are_flagged(code, rule):
    assert rule in rules(code)


@pytest.mark.parametrize("code", [
    "value = eval('1 + 2')\n",
    "import subprocess\nsubprocess.run(['ls', '-l'], check=True)\n",
    "import subprocess\nsubprocess.run(['ls'], shell=False)\n",
    "import json\nobj = json.loads(data)\n",
    "import os\npassword = os.environ['DB_PASSWORD']\n",
    "password = ''\napi_key = '<your key here>'\n",
])
def test_safe_code_is_not_flagged(code):
    assert rules(code) == []


def test_issue_range_covers_the_call():
    report = validate("import os\n\ndef run(cmd):\n    os.system(cmd)\n")
    (issue,) = report.issues
    assert (issue.line, issue.column, issue.end_line, issue.end_column) == (3, 4, 3, 18)
    assert issue.severity == "error"


def test_other_languages_get_only_the_secret_scan():
    report = validate('const key = "sk-abcdefghijklmnopqrstuvwx";\nfunction f( {\n', "javascript")
    assert report.parses and not report.checked
    assert [i.rule for i in report.issues] == ["hardcoded-secret"]
