# Data (spend/*.csv, revenue/*.csv) and models (adroi/models/<version>/, adroi/models/LATEST, adroi/runs/<run_id>/).
# Both: uniform access, no public access, versioning (an overwritten LATEST or data file can be recovered),
# old versions expire. Access logs go to a third bucket.

resource "google_storage_bucket" "access_logs" {
  #checkov:skip=CKV_GCP_62:This is the access-log sink itself; logging it into itself would loop.
  name                        = "${var.project_id}-adroi-access-logs"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age = 365
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket" "data" {
  name                        = local.data_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.data_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket" "models" {
  name                        = local.models_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }

  # Keep every model version (rollback needs them); drop old noncurrent generations and stale run staging.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.data_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = 90
      matches_prefix = ["${local.models_prefix}/runs/"]
    }
    action {
      type = "Delete"
    }
  }
}
