# Three identities, each with only what its job needs.
#   adroi-api       Cloud Run service: read objects under adroi/models/ of the models bucket, nothing else.
#   adroi-training  Composer workers: read data (bucket, source datasets), write models, write the metrics table
#                   (and run its MERGE and the data source's queries).
#   adroi-cloudbuild the build: push images, deploy this one Cloud Run service as adroi-api, invoke it for
#                   the smoke test and the canary's synthetic requests, read its metrics for the canary,
#                   write its logs, copy the DAG into the Composer bucket.

resource "google_service_account" "api" {
  account_id   = "adroi-api"
  display_name = "adroi prediction API (Cloud Run)"
}

resource "google_service_account" "training" {
  account_id   = "adroi-training"
  display_name = "adroi training pipeline (Composer workers)"
}

resource "google_service_account" "cloudbuild" {
  account_id   = "adroi-cloudbuild"
  display_name = "adroi Cloud Build deployer"
}

# ---- API: read-only, models prefix only ----------------------------------------------------------------
resource "google_storage_bucket_iam_member" "api_reads_models" {
  bucket = google_storage_bucket.models.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.api.member

  condition {
    title       = "models-prefix-only"
    description = "Objects under ${local.models_prefix}/models/ and listings of that prefix."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.models.name}/objects/${local.models_prefix}/models/\") || api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").startsWith(\"${local.models_prefix}/models/\")"
  }
}

# ---- Training ----------------------------------------------------------------------------------------
resource "google_storage_bucket_iam_member" "training_reads_data" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.training.member
}

# objectUser: create, overwrite (runs/<run_id>/ staging, LATEST compare-and-swap) and list, without IAM rights.
resource "google_storage_bucket_iam_member" "training_writes_models" {
  bucket = google_storage_bucket.models.name
  role   = "roles/storage.objectUser"
  member = google_service_account.training.member
}

resource "google_bigquery_table_iam_member" "training_edits_metrics" {
  dataset_id = google_bigquery_dataset.adroi.dataset_id
  table_id   = google_bigquery_table.training_runs.table_id
  role       = "roles/bigquery.dataEditor"
  member     = google_service_account.training.member
}

# `--data bq://project.dataset`: read the tables of each source dataset (ad platforms' transfers, our contract).
resource "google_bigquery_dataset_iam_member" "training_reads_sources" {
  for_each   = toset(var.source_datasets)
  project    = split(".", each.value)[0]
  dataset_id = split(".", each.value)[1]
  role       = "roles/bigquery.dataViewer"
  member     = google_service_account.training.member
}

# The MERGE that makes a run's row idempotent, and the reads of a BigQuery data source, are query jobs;
# jobs are project-level.
resource "google_project_iam_member" "training_runs_queries" {
  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = google_service_account.training.member
}

resource "google_project_iam_member" "training_is_composer_worker" {
  #checkov:skip=CKV_GCP_49:roles/composer.worker is what Composer requires on its environment's own service account; it is granted to that account only, never to a person.
  count   = local.composer_count
  project = var.project_id
  role    = "roles/composer.worker"
  member  = google_service_account.training.member
}

# ---- Cloud Build --------------------------------------------------------------------------------------
resource "google_artifact_registry_repository_iam_member" "cloudbuild_pushes_images" {
  location   = google_artifact_registry_repository.adroi.location
  repository = google_artifact_registry_repository.adroi.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.cloudbuild.member
}

# run.admin on this one service, not run.developer: `gcloud run deploy --no-allow-unauthenticated` removes any
# allUsers invoker binding on each deploy, which needs run.services.setIamPolicy.
resource "google_cloud_run_v2_service_iam_member" "cloudbuild_deploys_api" {
  name     = google_cloud_run_v2_service.api.name
  location = google_cloud_run_v2_service.api.location
  role     = "roles/run.admin"
  member   = google_service_account.cloudbuild.member
}

resource "google_cloud_run_v2_service_iam_member" "cloudbuild_invokes_api" {
  name     = google_cloud_run_v2_service.api.name
  location = google_cloud_run_v2_service.api.location
  role     = "roles/run.invoker"
  member   = google_service_account.cloudbuild.member
}

# Deploying a revision that runs as adroi-api requires actAs on that one account.
resource "google_service_account_iam_member" "cloudbuild_acts_as_api" {
  service_account_id = google_service_account.api.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.cloudbuild.member
}

# The canary step reads the new revision's request count and latency (project-level: metrics have no
# narrower resource).
resource "google_project_iam_member" "cloudbuild_reads_metrics" {
  project = var.project_id
  role    = "roles/monitoring.viewer"
  member  = google_service_account.cloudbuild.member
}

# A build running as a user-specified service account writes its own logs (options.logging: CLOUD_LOGGING_ONLY).
resource "google_project_iam_member" "cloudbuild_writes_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.cloudbuild.member
}

resource "google_storage_bucket_iam_member" "cloudbuild_ships_dags" {
  count  = local.composer_count
  bucket = local.composer_bucket
  role   = "roles/storage.objectUser"
  member = google_service_account.cloudbuild.member
}
