"""cloudbuild.yaml: checked against the build config schema, and its smoke-test script run for real.

No Cloud Build runner exists offline, so the file is parsed with PyYAML and checked against the documented
build config reference (https://cloud.google.com/build/docs/build-config-file-schema). The smoke-test step's
bash script is executed after Cloud Build's own substitution rules, with a stand-in `gcloud` on PATH and a
local HTTP server in place of the Cloud Run revision.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import FakeRevision

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD = yaml.safe_load((REPO_ROOT / "cloudbuild.yaml").read_text())
STEPS = {step["id"]: step for step in BUILD["steps"]}
DEPLOY_DOC = (REPO_ROOT / "README.md").read_text()

# The Build resource fields a config file may set, and the BuildStep / BuildOptions fields.
TOP_LEVEL_KEYS = {"steps", "timeout", "queueTtl", "logsBucket", "options", "substitutions", "tags",
                  "serviceAccount", "secrets", "availableSecrets", "artifacts", "images"}
STEP_KEYS = {"name", "args", "env", "allowFailure", "allowExitCodes", "dir", "id", "waitFor", "entrypoint",
             "secretEnv", "volumes", "timeout", "script", "automapSubstitutions", "results"}
OPTION_KEYS = {"env", "secretEnv", "volumes", "sourceProvenanceHash", "machineType", "diskSizeGb",
               "substitutionOption", "dynamicSubstitutions", "automapSubstitutions", "logStreamingOption",
               "logging", "defaultLogsBucketBehavior", "pool", "requestedVerifyOption", "pubsubTopic",
               "enableStructuredLogging"}
LOGGING_MODES = {"LOGGING_UNSPECIFIED", "LEGACY", "GCS_ONLY", "STACKDRIVER_ONLY", "CLOUD_LOGGING_ONLY", "NONE"}
MACHINE_TYPES = {"UNSPECIFIED", "N1_HIGHCPU_8", "N1_HIGHCPU_32", "E2_HIGHCPU_8", "E2_HIGHCPU_32", "E2_MEDIUM"}
BUILT_IN = {"PROJECT_ID", "PROJECT_NUMBER", "BUILD_ID", "LOCATION", "TRIGGER_NAME", "COMMIT_SHA", "REVISION_ID",
            "SHORT_SHA", "REPO_NAME", "REPO_FULL_NAME", "BRANCH_NAME", "TAG_NAME", "REF_NAME",
            "TRIGGER_BUILD_CONFIG_PATH", "SERVICE_ACCOUNT_EMAIL", "SERVICE_ACCOUNT"}
DURATION = re.compile(r"^\d+(\.\d+)?s$")
# `$NAME` or `${NAME...}` that Cloud Build substitutes; `$$` is a literal dollar (for bash).
SUBSTITUTION = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def substitutions_used(node: object) -> set[str]:
    """Names of every `$X` / `${X}` in the strings under `node` (ignoring `$$` escapes)."""
    names = set()
    for text in _strings(node):
        for m in SUBSTITUTION.finditer(text.replace("$$", "")):
            names.add(m.group(1) or m.group(2))
    return names


def substitute(text: str, values: dict[str, str]) -> str:
    """Apply Cloud Build's substitution to `text`: `$X`/`${X}` from `values`, `$$` to `$`."""
    parts = text.split("$$")
    out = [SUBSTITUTION.sub(lambda m: values[m.group(1) or m.group(2)], p) for p in parts]
    return "$".join(out)


def resolved_defaults(extra: dict[str, str]) -> dict[str, str]:
    """The substitution defaults with the references between them resolved (dynamicSubstitutions)."""
    values = dict(extra)
    pending = dict(BUILD["substitutions"])
    while pending:
        for name, value in list(pending.items()):
            if substitutions_used(value) <= values.keys():
                values[name] = substitute(value, values)
                del pending[name]
                break
        else:
            raise AssertionError(f"circular or undeclared references among substitutions: {pending}")
    return values


def flag(step: dict, name: str) -> str:
    """The value of `--name=value` in a step's args."""
    values = [a.split("=", 1)[1] for a in step["args"] if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"step {step['id']}: expected one --{name}=..., got {values}"
    return values[0]


def dependencies(step_id: str) -> set[str]:
    """Every step that `step_id` waits for, directly or not (no waitFor: all earlier steps)."""
    ids = [s["id"] for s in BUILD["steps"]]
    direct = STEPS[step_id].get("waitFor")
    if direct is None:
        direct = ids[: ids.index(step_id)]
    direct = [d for d in direct if d != "-"]
    found = set(direct)
    for d in direct:
        found |= dependencies(d)
    return found


def test_top_level_step_and_option_keys_are_in_the_build_config_schema():
    assert set(BUILD) <= TOP_LEVEL_KEYS
    for step in BUILD["steps"]:
        assert set(step) <= STEP_KEYS, f"step {step.get('id')}: unknown keys {set(step) - STEP_KEYS}"
        assert isinstance(step["name"], str) and step["name"]
        assert all(isinstance(a, str) for a in step.get("args", [])), f"step {step['id']}: non-string args"
    assert set(BUILD["options"]) <= OPTION_KEYS
    assert BUILD["options"]["logging"] in LOGGING_MODES
    assert BUILD["options"]["machineType"] in MACHINE_TYPES


def test_timeouts_are_durations_and_step_ids_are_unique_and_referenced_steps_exist():
    assert DURATION.match(BUILD["timeout"])
    assert all(DURATION.match(s["timeout"]) for s in BUILD["steps"] if "timeout" in s)
    ids = [s["id"] for s in BUILD["steps"]]
    assert len(ids) == len(set(ids))
    for step in BUILD["steps"]:
        for dep in step.get("waitFor", []):
            assert dep == "-" or ids.index(dep) < ids.index(step["id"]), f"{step['id']} waits for {dep}"


def test_the_test_step_runs_the_readme_test_command_in_python_311():
    step = STEPS["test"]
    assert step["name"] == "python:3.11"
    assert [step["entrypoint"], *step["args"]] == ["make", "test"]
    assert re.search(r"^test:", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE)
    assert "make test" in (REPO_ROOT / "README.md").read_text()


def test_build_push_deploy_and_images_name_the_same_image():
    image = "${_IMAGE}:$SHORT_SHA"
    build_args = STEPS["build"]["args"]
    assert build_args[0] == "build" and build_args[build_args.index("--tag") + 1] == image
    assert STEPS["push"]["args"] == ["push", image]
    assert flag(STEPS["deploy"], "image") == image
    assert BUILD["images"] == [image]
    assert BUILD["substitutions"]["_IMAGE"] == "${_REGION}-docker.pkg.dev/${PROJECT_ID}/${_REPOSITORY}/adroi-api"


def test_deploy_is_private_probed_and_configured_like_the_contract_says():
    deploy = STEPS["deploy"]
    assert deploy["args"][:3] == ["run", "deploy", "${_SERVICE}"]
    assert "--no-allow-unauthenticated" in deploy["args"]
    assert "--allow-unauthenticated" not in deploy["args"]
    assert flag(deploy, "region") == "${_REGION}"
    assert flag(deploy, "service-account") == "${_API_SERVICE_ACCOUNT}"
    env = dict(item.split("=", 1) for item in flag(deploy, "set-env-vars").split(","))
    assert env == {"MODEL_STORE": "${_MODEL_STORE}", "MODEL_POLL_SECONDS": "${_MODEL_POLL_SECONDS}",
                   "GOOGLE_CLOUD_PROJECT": "$PROJECT_ID"}
    probe = dict(item.split("=", 1) for item in flag(deploy, "startup-probe").split(","))
    assert probe["httpGet.path"] == "/readyz"
    assert int(probe["periodSeconds"]) * int(probe["failureThreshold"]) <= 240  # Cloud Run's startup limit
    assert "--no-traffic" in deploy["args"] and flag(deploy, "tag") == "sha-$SHORT_SHA"


def test_steps_run_in_a_safe_order():
    assert {"test", "build", "push"} <= dependencies("deploy")
    assert "deploy" in dependencies("smoke-test")
    assert "smoke-test" in dependencies("canary")
    assert "test" in dependencies("ship-dags")


def test_every_substitution_used_is_declared_and_every_declared_one_is_used():
    declared = set(BUILD["substitutions"])
    used = substitutions_used({k: v for k, v in BUILD.items() if k != "substitutions"})
    used_in_defaults = substitutions_used(BUILD["substitutions"])
    assert all(re.fullmatch(r"_[A-Z0-9_]+", name) for name in declared)
    assert {u for u in used | used_in_defaults if u.startswith("_")} <= declared
    assert {u for u in used | used_in_defaults if not u.startswith("_")} <= BUILT_IN, "a bash $var needs $$"
    assert declared <= used | used_in_defaults, f"declared but unused: {declared - used - used_in_defaults}"
    resolved_defaults({"PROJECT_ID": "p", "SHORT_SHA": "abc1234"})  # no cycles, no undeclared references


@pytest.mark.parametrize("name", sorted(BUILD["substitutions"]))
def test_every_substitution_is_documented_in_the_deploy_section(name):
    row = re.search(rf"^\|\s*`{name}`\s*\|(.+)\|$", DEPLOY_DOC, re.MULTILINE)
    assert row, f"{name} has no row in the substitution table of README.md"


def test_composer_step_skips_cleanly_without_a_composer_bucket(tmp_path):
    script = substitute(STEPS["ship-dags"]["args"][-1], resolved_defaults({"PROJECT_ID": "p", "SHORT_SHA": "a"}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text("#!/bin/sh\necho unexpected gcloud call >&2\nexit 9\n")
    (bin_dir / "gcloud").chmod(0o755)
    result = subprocess.run(["bash", "-ceu", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    assert "skipping" in result.stdout


# ---- the smoke test, run for real against a stand-in revision ------------------------------------------

def run_smoke_test(tmp_path: Path, revision_url: str) -> subprocess.CompletedProcess[str]:
    """Run the smoke-test step's script as Cloud Build would, with a stand-in gcloud."""
    values = resolved_defaults({"PROJECT_ID": "proj", "SHORT_SHA": "abc1234"})
    script = substitute(STEPS["smoke-test"]["args"][-1], values)
    describe = {"status": {"url": "https://adroi-api-x.a.run.app", "traffic": [
        {"percent": 100, "revisionName": "adroi-api-00001"},
        {"tag": "sha-abc1234", "revisionName": "adroi-api-00002", "url": revision_url}]}}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "describe.json").write_text(json.dumps(describe))
    (bin_dir / "gcloud").write_text(
        "#!/bin/sh\n"
        'echo "$@" >> "$(dirname "$0")/calls"\n'
        'case "$*" in\n'
        f'  "run services describe {values["_SERVICE"]} --region={values["_REGION"]} --format=json") '
        'cat "$(dirname "$0")/describe.json";;\n'
        f'  "auth print-identity-token --audiences={values["_AUDIENCE"]}") echo token-123;;\n'
        '  *) echo "unexpected gcloud $*" >&2; exit 9;;\n'
        "esac\n")
    (bin_dir / "gcloud").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run([STEPS["smoke-test"]["entrypoint"], *STEPS["smoke-test"]["args"][:-1], script],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (the cloud-sdk image has it)")
def test_smoke_test_calls_readyz_and_predict_on_the_tagged_revision_with_a_token(tmp_path, revision):
    result = run_smoke_test(tmp_path, revision)

    assert result.returncode == 0, result.stderr
    assert [r[:2] for r in FakeRevision.requests] == [("GET", "/readyz"), ("GET", "/model"), ("POST", "/predict")]
    assert FakeRevision.requests[0][2] == "Bearer token-123"
    assert json.loads(FakeRevision.requests[2][2]) == {"spend": {"email": 1000.0, "video": 1000.0}}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (the cloud-sdk image has it)")
def test_smoke_test_fails_the_build_when_predict_does_not_answer(tmp_path, revision):
    FakeRevision.failing = True

    result = run_smoke_test(tmp_path, revision)

    assert result.returncode != 0
    assert ("POST", "/predict") in [r[:2] for r in FakeRevision.requests]


# ---- the canary step -----------------------------------------------------------------------------------

def canary_command(values: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """The canary step's pip install line and its `python -m delivery.canary` argv (after substitution)."""
    script = STEPS["canary"]["args"][-1]
    if values is not None:
        script = substitute(script, values)
    lines = [shlex.split(line) for line in script.replace("\\\n", " ").strip().splitlines()]
    assert len(lines) == 2, lines
    return lines[0], lines[1]


def test_the_canary_runs_after_the_smoke_test_and_is_the_only_step_that_moves_traffic():
    ids = [s["id"] for s in BUILD["steps"]]
    assert ids.index("canary") == ids.index("smoke-test") + 1
    assert STEPS["canary"]["waitFor"] == ["smoke-test"]
    assert {"deploy", "smoke-test", "push", "test"} <= dependencies("canary")
    movers = [s["id"] for s in BUILD["steps"] if "update-traffic" in json.dumps(s) or "delivery.canary" in json.dumps(s)]
    assert movers == ["canary"]


def test_the_canary_image_installs_what_the_script_imports_at_the_pinned_version():
    pip, _ = canary_command()
    assert STEPS["canary"]["name"] == "python:3.11"
    assert pip[:2] == ["pip", "install"]
    pinned = {line.split("==")[0]: line for line in (REPO_ROOT / "requirements-dev.txt").read_text().splitlines()
              if "==" in line}
    installed = [a for a in pip[2:] if not a.startswith("-")]
    assert installed == [pinned["google-cloud-monitoring"]]
    # Everything delivery/ imports comes with python:3.11 or with google-cloud-monitoring (google-auth,
    # requests, google-api-core, googleapis-common-protos): no import of training or app.
    source = (REPO_ROOT / "delivery" / "canary.py").read_text()
    imported = set(re.findall(r"^\s*(?:from|import) ([a-z_][a-z0-9_.]*)", source, re.MULTILINE))
    third_party = {m.split(".")[0] for m in imported} - set(__import__("sys").stdlib_module_names) - {"__future__"}
    assert third_party <= {"google", "requests", "delivery"}, third_party
    assert not {m for m in imported if m.startswith(("training", "app"))}


def test_the_canary_command_line_parses_with_the_script_and_carries_every_canary_substitution():
    from delivery.canary import parse_args

    _, argv = canary_command(resolved_defaults({"PROJECT_ID": "proj", "SHORT_SHA": "abc1234"}))
    assert argv[:3] == ["python", "-m", "delivery.canary"]
    args = parse_args(argv[3:])
    assert (args.project, args.service, args.tag, args.audience) == ("proj", "adroi-api", "sha-abc1234", "adroi-api")
    assert (args.canary_percent, args.watch_seconds, args.min_requests) == (10, 600, 50)
    _, raw = canary_command()
    canary_substitutions = {n for n in BUILD["substitutions"] if n.startswith("_CANARY_")}
    assert canary_substitutions and canary_substitutions <= substitutions_used(raw)


def test_canary_thresholds_default_to_the_alert_policies_thresholds():
    policies = REPO_ROOT / "monitoring" / "policies"
    ratio = json.loads((policies / "api-5xx-ratio.json").read_text())["conditions"][0]["conditionThreshold"]
    p99 = json.loads((policies / "api-p99-latency.json").read_text())["conditions"][0]["conditionThreshold"]
    assert float(BUILD["substitutions"]["_CANARY_MAX_5XX_RATIO"]) == ratio["thresholdValue"]
    assert float(BUILD["substitutions"]["_CANARY_MAX_P99_MS"]) == p99["thresholdValue"]


def test_the_canary_step_and_the_build_outlast_the_longest_watch_so_a_rollback_always_runs():
    from delivery.canary import MAX_WATCH_SECONDS

    seconds = {s["id"]: float(s["timeout"][:-1]) for s in BUILD["steps"]}
    assert seconds["canary"] >= MAX_WATCH_SECONDS + 600
    assert float(BUILD["substitutions"]["_CANARY_WATCH_SECONDS"]) <= MAX_WATCH_SECONDS
    critical_path = ["test", "push", "deploy", "smoke-test", "canary"]
    assert sum(seconds[s] for s in critical_path) <= float(BUILD["timeout"][:-1])
