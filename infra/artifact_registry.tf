resource "google_artifact_registry_repository" "adroi" {
  #checkov:skip=CKV_GCP_84:Google-managed encryption at rest is the accepted baseline here: the data are aggregated marketing spend, no compliance regime asks for CMEK, and a lost or disabled KMS key would make the images unreadable. Add a kms key (var) if policy requires it.
  location      = var.region
  repository_id = local.repository_id
  format        = "DOCKER"
  description   = "adroi API images, tagged with the short commit SHA by Cloud Build."

  docker_config {
    immutable_tags = true
  }

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 20
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "7776000s"
    }
  }

  depends_on = [google_project_service.required]
}
