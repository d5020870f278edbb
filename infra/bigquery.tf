# The metrics table: one row per pipeline run. Its schema is the file the code exports
# (`python -m training.metrics export-schema`), never retyped here.

resource "google_bigquery_dataset" "adroi" {
  #checkov:skip=CKV_GCP_81:Google-managed encryption at rest is the accepted baseline here: the data are aggregated marketing spend, no compliance regime asks for CMEK, and a lost or disabled KMS key would make the metrics history unreadable. Add a kms key (var) if policy requires it.
  dataset_id                 = "adroi"
  location                   = var.region
  description                = "adroi training runs"
  delete_contents_on_destroy = false
  depends_on                 = [google_project_service.required]
}

resource "google_bigquery_table" "training_runs" {
  #checkov:skip=CKV_GCP_80:Google-managed encryption at rest is the accepted baseline here: the data are aggregated marketing spend, no compliance regime asks for CMEK, and a lost or disabled KMS key would make the metrics history unreadable. Add a kms key (var) if policy requires it.
  dataset_id          = google_bigquery_dataset.adroi.dataset_id
  table_id            = "training_runs"
  description         = "One row per adroi training run (training.metrics.RunRecord)."
  deletion_protection = true
  schema              = jsonencode(jsondecode(file("${path.module}/metrics_schema.json")))

  time_partitioning {
    type  = "DAY"
    field = "started_at"
  }

  clustering = ["status"]
}
