# The prediction API. Cloud Build deploys each new image with the same settings (cloudbuild.yaml); Terraform
# creates the service and owns everything but the image and the traffic split.

resource "google_cloud_run_v2_service" "api" {
  name                = local.service_name
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = true
  custom_audiences    = [local.api_audience]

  template {
    service_account                  = google_service_account.api.email
    max_instance_request_concurrency = 80

    scaling {
      min_instance_count = 0
      max_instance_count = 10
    }

    containers {
      image = var.initial_image

      ports {
        container_port = 8080
      }

      env {
        name  = "MODEL_STORE"
        value = local.model_store
      }

      env {
        name  = "MODEL_POLL_SECONDS"
        value = "30"
      }

      # Not set by Cloud Run: the API names the trace of its log lines with it.
      env {
        name  = "GOOGLE_CLOUD_PROJECT"
        value = var.project_id
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "1Gi"
        }
      }

      # 200 only once a verified model is loaded: a revision without a model never takes traffic.
      startup_probe {
        initial_delay_seconds = 0
        period_seconds        = 5
        timeout_seconds       = 3
        failure_threshold     = 24
        http_get {
          path = "/readyz"
          port = 8080
        }
      }
    }
  }

  lifecycle {
    ignore_changes = [
      template[0].containers[0].image,
      template[0].revision,
      template[0].labels,
      client,
      client_version,
      traffic,
    ]
  }

  depends_on = [google_project_service.required]
}
# No allUsers / allAuthenticatedUsers invoker binding: callers need roles/run.invoker and an identity token.
