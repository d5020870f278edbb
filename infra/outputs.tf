output "api_url" {
  description = "URL of the prediction API (callers need roles/run.invoker and an identity token)."
  value       = google_cloud_run_v2_service.api.uri
}

output "api_audience" {
  description = "Custom audience to request identity tokens for (any *.run.app URL of the service also works)."
  value       = local.api_audience
}

output "data_bucket" {
  value = "gs://${google_storage_bucket.data.name}"
}

output "model_store" {
  value = local.model_store
}

output "metrics_table" {
  value = local.metrics_table
}

output "image" {
  description = "Image repository Cloud Build pushes to (tagged with the short commit SHA)."
  value       = local.image
}

output "composer_bucket" {
  value = var.enable_composer ? "gs://${local.composer_bucket}" : ""
}

output "composer_airflow_uri" {
  value = var.enable_composer ? google_composer_environment.adroi[0].config[0].airflow_uri : ""
}

output "training_service_account" {
  value = google_service_account.training.email
}
