# The Composer environment that runs composer_dags/ daily, as adroi-training. Set enable_composer = false to
# run the pipeline some other way (the CLI, a scheduler); Cloud Build then skips shipping the DAG.

resource "google_composer_environment" "adroi" {
  count  = local.composer_count
  name   = "adroi"
  region = var.region

  config {
    software_config {
      image_version = var.composer_image_version
      pypi_packages = var.composer_pypi_packages
      # Airflow creates DAGs paused by default; the daily DAG should run as soon as Cloud Build ships it.
      airflow_config_overrides = {
        "core-dags_are_paused_at_creation" = "False"
      }
      env_variables = {
        ADROI_DATA    = "gs://${google_storage_bucket.data.name}"
        ADROI_STORE   = local.model_store
        ADROI_METRICS = local.metrics_table
        # Failure emails of the DAG (Airflow's own email backend), besides the Cloud Monitoring alerts.
        ADROI_DAG_ALERT_EMAILS = var.notification_email
      }
    }

    node_config {
      service_account = google_service_account.training.email
    }
  }

  depends_on = [google_project_iam_member.training_is_composer_worker, google_project_iam_member.composer_agent]
}

# Composer 2/3 environments need their service agent to hold this role before they can be created.
resource "google_project_iam_member" "composer_agent" {
  count   = local.composer_count
  project = var.project_id
  role    = "roles/composer.ServiceAgentV2Ext"
  member  = "serviceAccount:service-${data.google_project.this.number}@cloudcomposer-accounts.iam.gserviceaccount.com"
}

locals {
  # dag_gcs_prefix is gs://<bucket>/dags
  composer_bucket = var.enable_composer ? split("/", google_composer_environment.adroi[0].config[0].dag_gcs_prefix)[2] : ""
}
