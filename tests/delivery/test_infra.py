"""infra/: the Terraform parses, agrees with the code and cloudbuild.yaml, and passes checkov.

No Terraform binary or provider registry is reachable here: python-hcl2 parses the files and checkov (in its
own virtualenv, `.venv-checkov`, because its pins clash with ours) scans them offline.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from training.metrics import METRICS_SCHEMA, SCHEMA_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
TF_FILES = sorted(INFRA.glob("*.tf"))
CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"
BUILD = yaml.safe_load((REPO_ROOT / "cloudbuild.yaml").read_text())


def unquote(node: Any) -> Any:
    """python-hcl2 keeps HCL's quotes on keys and string literals; drop them."""
    if isinstance(node, dict):
        return {unquote(k): unquote(v) for k, v in node.items() if k != "__comments__"}
    if isinstance(node, list):
        return [unquote(v) for v in node]
    if isinstance(node, str) and len(node) >= 2 and node[0] == node[-1] == '"':
        return node[1:-1]
    return node


def parse(path: Path) -> dict[str, Any]:
    """One .tf file as plain data."""
    with path.open() as f:
        return unquote(hcl2.load(f))


CONFIG = {p.name: parse(p) for p in TF_FILES}


def resources(kind: str) -> dict[str, dict[str, Any]]:
    """Every resource of a type, by name, across all files."""
    return {name: body for cfg in CONFIG.values() for block in cfg.get("resource", [])
            for name, body in block.get(kind, {}).items()}


def local(name: str) -> Any:
    """The value of `local.<name>`."""
    return next(b[name] for cfg in CONFIG.values() for b in cfg.get("locals", []) if name in b)


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The single nested block `name` of a resource body."""
    (inner,) = body[name]
    return inner


def test_every_tf_file_parses_and_infra_has_the_pieces_the_issue_lists():
    assert TF_FILES
    for kind in ("google_storage_bucket", "google_bigquery_dataset", "google_bigquery_table",
                 "google_artifact_registry_repository", "google_service_account", "google_cloud_run_v2_service",
                 "google_cloudbuild_trigger", "google_monitoring_notification_channel",
                 "google_monitoring_alert_policy", "google_logging_metric", "google_composer_environment"):
        assert resources(kind), f"no {kind} in infra/"


def test_metrics_table_schema_is_the_file_the_code_exports():
    table = resources("google_bigquery_table")["training_runs"]
    assert "metrics_schema.json" in table["schema"] and "file(" in table["schema"]
    assert SCHEMA_FILE == INFRA / "metrics_schema.json"
    assert json.loads(SCHEMA_FILE.read_text()) == [c.to_json() for c in METRICS_SCHEMA], (
        "infra/metrics_schema.json is stale: run `python -m training.metrics export-schema`")


def test_metrics_table_is_day_partitioned_on_started_at():
    table = resources("google_bigquery_table")["training_runs"]
    partitioning = block(table, "time_partitioning")
    assert partitioning == {"type": "DAY", "field": "started_at", "__is_block__": True}
    assert {"name": "started_at", "type": "TIMESTAMP", "mode": "REQUIRED"}.items() <= next(
        c.to_json() for c in METRICS_SCHEMA if c.name == "started_at").items()


@pytest.mark.parametrize("name", ["data", "models", "access_logs"])
def test_buckets_are_private_uniform_versioned_and_expire_old_versions(name):
    bucket = resources("google_storage_bucket")[name]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert block(bucket, "versioning")["enabled"] is True
    assert bucket["lifecycle_rule"]


def test_no_iam_grant_is_public():
    members = [str(body.get("member", body.get("members"))) for cfg in CONFIG.values()
               for blk in cfg.get("resource", []) for kind, named in blk.items() if "_iam_" in kind
               for body in named.values()]
    assert members
    assert not [m for m in members if "allUsers" in m or "allAuthenticatedUsers" in m]


def test_api_identity_reads_the_models_prefix_and_nothing_else():
    api_member = "${google_service_account.api.member}"
    grants = {(kind, name): body for cfg in CONFIG.values() for blk in cfg.get("resource", [])
              for kind, named in blk.items() for name, body in named.items() if body.get("member") == api_member}
    assert list(grants) == [("google_storage_bucket_iam_member", "api_reads_models")]
    grant = grants[("google_storage_bucket_iam_member", "api_reads_models")]
    assert grant["role"] == "roles/storage.objectViewer"
    assert grant["bucket"] == "${google_storage_bucket.models.name}"
    expression = block(grant, "condition")["expression"]
    assert '/objects/${local.models_prefix}/models/' in expression
    assert 'objectListPrefix' in expression


def test_training_and_cloud_build_identities_get_only_their_jobs_roles():
    def roles_of(account: str) -> set[str]:
        member = f"${{google_service_account.{account}.member}}"
        return {body["role"] for cfg in CONFIG.values() for blk in cfg.get("resource", [])
                for named in blk.values() for body in named.values() if body.get("member") == member}

    assert roles_of("training") == {"roles/storage.objectViewer", "roles/storage.objectUser",
                                    "roles/bigquery.dataEditor", "roles/bigquery.dataViewer",
                                    "roles/bigquery.jobUser", "roles/composer.worker"}
    assert roles_of("cloudbuild") == {"roles/artifactregistry.writer", "roles/run.admin", "roles/run.invoker",
                                      "roles/monitoring.viewer",
                                      "roles/iam.serviceAccountUser", "roles/logging.logWriter",
                                      "roles/storage.objectUser"}
    deploys = resources("google_cloud_run_v2_service_iam_member")["cloudbuild_deploys_api"]
    assert deploys["name"] == "${google_cloud_run_v2_service.api.name}"  # one service, not the project
    acts_as = resources("google_service_account_iam_member")["cloudbuild_acts_as_api"]
    assert acts_as["service_account_id"] == "${google_service_account.api.name}"
    assert not any("roles/owner" in p.read_text() or "roles/editor" in p.read_text() for p in TF_FILES)


def test_training_reads_every_source_dataset_and_only_those():
    reads = resources("google_bigquery_dataset_iam_member")["training_reads_sources"]
    assert reads["role"] == "roles/bigquery.dataViewer"
    assert reads["for_each"] == "${toset(var.source_datasets)}"
    assert reads["member"] == "${google_service_account.training.member}"
    (variable,) = [b["source_datasets"] for cfg in CONFIG.values() for b in cfg.get("variable", [])
                   if "source_datasets" in b]
    assert variable["default"] == []


def test_cloud_run_service_matches_what_cloud_build_deploys():
    service = resources("google_cloud_run_v2_service")["api"]
    template = block(service, "template")
    container = block(template, "containers")
    probe = block(container, "startup_probe")
    deploy_args = next(s for s in BUILD["steps"] if s["id"] == "deploy")["args"]
    flags = dict(a[2:].split("=", 1) for a in deploy_args if a.startswith("--") and "=" in a)
    gcloud_probe = dict(item.split("=", 1) for item in flags["startup-probe"].split(","))

    assert block(probe, "http_get")["path"] == gcloud_probe["httpGet.path"] == "/readyz"
    for tf_name, gcloud_name in [("period_seconds", "periodSeconds"), ("timeout_seconds", "timeoutSeconds"),
                                 ("failure_threshold", "failureThreshold")]:
        assert probe[tf_name] == int(gcloud_probe[gcloud_name])
    env = {e["name"] for e in container["env"]}
    assert env == {item.split("=", 1)[0] for item in flags["set-env-vars"].split(",")}
    assert template["service_account"] == "${google_service_account.api.email}"
    assert service["custom_audiences"] == ["${local.api_audience}"]
    assert local("api_audience") == BUILD["substitutions"]["_AUDIENCE"]
    assert local("service_name") == BUILD["substitutions"]["_SERVICE"]
    assert block(service, "lifecycle")["ignore_changes"]  # Cloud Build owns the image and traffic


def test_trigger_runs_cloudbuild_yaml_on_main_with_every_substitution():
    trigger = resources("google_cloudbuild_trigger")["main"]
    assert trigger["filename"] == "cloudbuild.yaml"
    assert block(block(trigger, "github"), "push")["branch"] == "^main$"
    assert set(trigger["substitutions"]) == set(BUILD["substitutions"])
    assert trigger["service_account"] == "${google_service_account.cloudbuild.id}"


def test_names_agree_with_the_cloud_build_defaults():
    assert BUILD["substitutions"]["_MODEL_STORE"] == "gs://${PROJECT_ID}-adroi-models/" + local("models_prefix")
    assert local("models_bucket") == "${var.project_id}-adroi-models"
    assert BUILD["substitutions"]["_REPOSITORY"] == local("repository_id")


def test_composer_sits_behind_a_variable():
    composer = resources("google_composer_environment")["adroi"]
    assert composer["count"] == "${local.composer_count}"
    assert local("composer_count") == "${var.enable_composer ? 1 : 0}"
    node = block(block(composer, "config"), "node_config")
    assert node["service_account"] == "${google_service_account.training.email}"


def test_alert_policies_are_built_from_the_monitoring_policy_files():
    policy = resources("google_monitoring_alert_policy")["adroi"]
    assert policy["for_each"] == "${local.alert_policies}"
    assert "monitoring/policies" in local("policy_dir")
    assert policy["notification_channels"] == ["${google_monitoring_notification_channel.email.id}"]


def test_every_checkov_skip_is_justified():
    skips = [m for p in TF_FILES for m in re.finditer(r"#checkov:skip=(CKV_[A-Z0-9_]+)(?::(.*))?", p.read_text())]
    assert skips
    for m in skips:
        assert m.group(2) and len(m.group(2).split()) >= 8, f"{m.group(1)} is skipped without a reason"


@pytest.mark.slow
@pytest.mark.skipif(not CHECKOV.exists(), reason="checkov is not installed in .venv-checkov "
                    "(python3 -m venv .venv-checkov && .venv-checkov/bin/pip install checkov==3.3.30)")
def test_checkov_passes():
    result = subprocess.run([str(CHECKOV), "-d", str(INFRA), "--skip-download", "--compact", "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Failed checks: 0\b", result.stdout), result.stdout


# ---- the deploy guide (README.md, "Deploy to Google Cloud") agrees with infra/ --------------------------

README = (REPO_ROOT / "README.md").read_text()
DEPLOY_GUIDE = README[README.index("## Deploy to Google Cloud"):README.index("\n## ", README.index("## Deploy to Google Cloud") + 5)]
SHELL_BLOCKS = re.findall(r"```sh\n(.*?)```", DEPLOY_GUIDE, re.DOTALL)


def shell_commands() -> list[str]:
    """Every command of the guide's sh blocks, continuation lines joined, comments dropped."""
    text = "\n".join(SHELL_BLOCKS).replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in text.splitlines() if line.strip()]


def commands_of(prefix: str) -> list[list[str]]:
    """The argv after `prefix` of every guide command starting with it."""
    import shlex

    return [shlex.split(c[len(prefix):].replace("<VERSION>", "v1")) for c in shell_commands() if c.startswith(prefix)]


def requirement_pins(*names: str) -> dict[str, str]:
    """`package -> ==version` of the given requirements files."""
    pins = {}
    for name in names:
        for line in (REPO_ROOT / name).read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                package, version = line.split("==")
                pins[package.strip().lower()] = f"=={version.strip()}"
    return pins


def test_state_lives_in_a_gcs_backend_that_the_guide_creates_and_initialises():
    (terraform,) = [b for cfg in CONFIG.values() for b in cfg.get("terraform", [])]
    (backend,) = terraform["backend"]
    assert list(backend) == ["gcs"]  # partial configuration: bucket and prefix come from `init`
    commands = shell_commands()
    create = next(c for c in commands if c.startswith("gcloud storage buckets create gs://$PROJECT_ID-tfstate"))
    assert "--uniform-bucket-level-access" in create and "--public-access-prevention" in create
    assert "gcloud storage buckets update gs://$PROJECT_ID-tfstate --versioning" in commands
    init = commands.index('terraform -chdir=infra init -backend-config="bucket=$PROJECT_ID-tfstate" '
                          '-backend-config="prefix=adroi"')
    assert commands.index(create) < init < next(i for i, c in enumerate(commands) if "terraform -chdir=infra apply" in c)


def test_the_guide_runs_every_command_from_the_repository_root():
    commands = shell_commands()
    assert not [c for c in commands if c.startswith("cd ") or " cd " in c]
    assert all("-chdir=infra" in c for c in commands if c.startswith("terraform"))
    assert "terraform output" not in DEPLOY_GUIDE
    for path in re.findall(r"(?<![\w/.$-])((?:monitoring|infra|composer_dags|data)/[\w./-]*\w)", DEPLOY_GUIDE):
        if "<" not in path:
            assert (REPO_ROOT / path).exists(), f"the guide names {path}, which does not exist"


def test_every_training_command_of_the_guide_parses_with_the_cli():
    from training.cli import build_parser

    runs = commands_of(".venv/bin/python -m training ")
    assert {c[0] for c in runs} >= {"run", "sample-data", "versions", "promote"}
    for argv in runs:
        build_parser().parse_args(argv)  # exits 2 on an unknown option


def test_the_guide_enables_every_api_terraform_enables_and_the_one_impersonation_needs():
    enable = next(c for c in shell_commands() if c.startswith("gcloud services enable "))
    enabled = set(enable.split()[3:])
    (apis,) = [body for name, body in resources("google_project_service").items() if name == "required"]
    terraform_apis = set(re.findall(r"[a-z]+\.googleapis\.com", str(apis["for_each"])))
    assert "iamcredentials.googleapis.com" in terraform_apis
    assert terraform_apis <= enabled, terraform_apis - enabled
    assert "--impersonate-service-account" in DEPLOY_GUIDE and "roles/iam.serviceAccountTokenCreator" in DEPLOY_GUIDE


@pytest.mark.parametrize("variable", sorted({name for cfg in CONFIG.values() for block in cfg.get("variable", [])
                                             for name in block}))
def test_every_terraform_variable_has_a_row_in_the_guide(variable):
    assert re.search(rf"^\|\s*`{variable}`\s*\|", DEPLOY_GUIDE, re.MULTILINE), f"{variable} is not documented"


# The predefined role that grants creating each resource type (Cloud IAM roles reference). A new resource
# type in infra/ must be added here, and its role to the guide's table of what the deploying person needs.
CREATOR_ROLE = {
    "google_project_service": "roles/serviceusage.serviceUsageAdmin",
    "google_storage_bucket": "roles/storage.admin",
    "google_storage_bucket_iam_member": "roles/storage.admin",
    "google_bigquery_dataset": "roles/bigquery.admin",
    "google_bigquery_table": "roles/bigquery.admin",
    "google_bigquery_table_iam_member": "roles/bigquery.admin",
    "google_bigquery_dataset_iam_member": "roles/bigquery.admin",
    "google_artifact_registry_repository": "roles/artifactregistry.admin",
    "google_artifact_registry_repository_iam_member": "roles/artifactregistry.admin",
    "google_service_account": "roles/iam.serviceAccountAdmin",
    "google_service_account_iam_member": "roles/iam.serviceAccountAdmin",
    "google_project_iam_member": "roles/resourcemanager.projectIamAdmin",
    "google_cloud_run_v2_service": "roles/run.admin",
    "google_cloud_run_v2_service_iam_member": "roles/run.admin",
    "google_cloudbuild_trigger": "roles/cloudbuild.builds.editor",
    "google_monitoring_notification_channel": "roles/monitoring.editor",
    "google_monitoring_alert_policy": "roles/monitoring.editor",
    "google_logging_metric": "roles/logging.configWriter",
    "google_composer_environment": "roles/composer.admin",
}


def test_the_guide_lists_a_role_for_every_resource_type_terraform_creates():
    types = {kind for cfg in CONFIG.values() for blk in cfg.get("resource", []) for kind in blk}
    assert types <= set(CREATOR_ROLE), f"add the creating role of {types - set(CREATOR_ROLE)}"
    listed = set(re.findall(r"^\|\s*`(roles/[\w.]+)`\s*\|", DEPLOY_GUIDE, re.MULTILINE))
    assert {CREATOR_ROLE[t] for t in types} | {"roles/iam.serviceAccountUser"} <= listed
    # Attaching a service account to Cloud Run, Composer or a trigger needs actAs on it.
    assert any("service_account" in str(body) for body in resources("google_cloud_run_v2_service").values())


def test_composer_pins_numpy_and_every_package_to_the_versions_the_api_and_training_use():
    (variables,) = [b["composer_pypi_packages"] for cfg in CONFIG.values() for b in cfg.get("variable", [])
                    if "composer_pypi_packages" in b]
    composer = {k.lower(): v for k, v in variables["default"].items()}
    serving = requirement_pins("requirements.txt")
    assert composer["numpy"] == serving["numpy"]  # the API refuses a model from another numpy major
    training = requirement_pins("requirements-train.txt", "requirements.txt")
    assert {k: training.get(k) for k in composer} == composer
    composer_env = resources("google_composer_environment")["adroi"]
    software = block(block(composer_env, "config"), "software_config")
    assert software["pypi_packages"] == "${var.composer_pypi_packages}"


def test_composer_creates_the_dag_unpaused():
    software = block(block(resources("google_composer_environment")["adroi"], "config"), "software_config")
    assert software["airflow_config_overrides"] == {"core-dags_are_paused_at_creation": "False"}
    assert "dags_are_paused_at_creation" in DEPLOY_GUIDE and "dags unpause" in DEPLOY_GUIDE
