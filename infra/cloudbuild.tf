# On every push to main: cloudbuild.yaml (test, build, push, deploy, smoke-test, canary, ship the DAG), run as
# adroi-cloudbuild. The GitHub repository must be connected to Cloud Build first (README.md, "Deploy to Google Cloud").

resource "google_cloudbuild_trigger" "main" {
  name            = "adroi-main"
  location        = "global"
  description     = "Test, build and deploy adroi on a push to main."
  filename        = "cloudbuild.yaml"
  service_account = google_service_account.cloudbuild.id

  github {
    owner = var.github_owner
    name  = var.github_repository
    push {
      branch = "^main$"
    }
  }

  substitutions = {
    _REGION              = var.region
    _REPOSITORY          = google_artifact_registry_repository.adroi.repository_id
    _SERVICE             = google_cloud_run_v2_service.api.name
    _IMAGE               = local.image
    _API_SERVICE_ACCOUNT = google_service_account.api.email
    _MODEL_STORE         = local.model_store
    _MODEL_POLL_SECONDS  = "30"
    _AUDIENCE            = local.api_audience
    _COMPOSER_BUCKET     = var.enable_composer ? "gs://${local.composer_bucket}" : ""
    # The canary rollout (delivery/canary.py); the thresholds match monitoring/policies/api-*.json.
    _CANARY_PERCENT            = "10"
    _CANARY_WATCH_SECONDS      = "600"
    _CANARY_MIN_REQUESTS       = "50"
    _CANARY_MAX_5XX_RATIO      = "0.01"
    _CANARY_MAX_P99_MS         = "500"
    _CANARY_SYNTHETIC_REQUESTS = "10"
  }

  depends_on = [google_project_service.required]
}
