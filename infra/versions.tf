terraform {
  required_version = ">= 1.6"

  # State lives in a versioned GCS bucket created once by hand (README.md, "Deploy to Google Cloud", step 3):
  #   terraform -chdir=infra init -backend-config="bucket=<project>-tfstate" -backend-config="prefix=adroi"
  backend "gcs" {}

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

data "google_project" "this" {}

locals {
  # Names shared with cloudbuild.yaml (substitution defaults) and monitoring/policies/*.json (service name).
  service_name   = "adroi-api"
  repository_id  = "adroi"
  models_prefix  = "adroi"               # MODEL_STORE = gs://<models bucket>/adroi
  api_audience   = "adroi-api"           # custom audience of the service; Cloud Build's smoke test asks for it
  image          = "${var.region}-docker.pkg.dev/${var.project_id}/${local.repository_id}/adroi-api"
  data_bucket    = "${var.project_id}-adroi-data"
  models_bucket  = "${var.project_id}-adroi-models"
  model_store    = "gs://${local.models_bucket}/${local.models_prefix}"
  metrics_table  = "bq://${var.project_id}.${google_bigquery_dataset.adroi.dataset_id}.${google_bigquery_table.training_runs.table_id}"
  composer_count = var.enable_composer ? 1 : 0
}
