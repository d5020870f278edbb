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
                                    "roles/bigquery.dataEditor", "roles/bigquery.jobUser", "roles/composer.worker"}
    assert roles_of("cloudbuild") == {"roles/artifactregistry.writer", "roles/run.admin", "roles/run.invoker",
                                      "roles/monitoring.viewer",
                                      "roles/iam.serviceAccountUser", "roles/logging.logWriter",
                                      "roles/storage.objectUser"}
    deploys = resources("google_cloud_run_v2_service_iam_member")["cloudbuild_deploys_api"]
    assert deploys["name"] == "${google_cloud_run_v2_service.api.name}"  # one service, not the project
    acts_as = resources("google_service_account_iam_member")["cloudbuild_acts_as_api"]
    assert acts_as["service_account_id"] == "${google_service_account.api.name}"
    assert not any("roles/owner" in p.read_text() or "roles/editor" in p.read_text() for p in TF_FILES)


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
