variable "project_id" {
  description = "Google Cloud project that holds everything."
  type        = string
}

variable "region" {
  description = "Region of the buckets, dataset, registry, Cloud Run service and Composer environment."
  type        = string
  default     = "europe-west1"
}

variable "notification_email" {
  description = "Address that receives every alert."
  type        = string
}

variable "github_owner" {
  description = "GitHub owner (user or organisation) of the repository connected to Cloud Build."
  type        = string
}

variable "github_repository" {
  description = "GitHub repository name connected to Cloud Build."
  type        = string
  default     = "adroi"
}

variable "initial_image" {
  description = "Image the Cloud Run service starts with, before the first Cloud Build deploy replaces it."
  type        = string
  default     = "us-docker.pkg.dev/cloudrun/container/hello"
}

variable "enable_composer" {
  description = "Create the Cloud Composer environment that runs the daily training DAG."
  type        = bool
  default     = true
}

variable "composer_image_version" {
  description = "Cloud Composer image (Composer 3 with Airflow 2.10/2.11 or 3.x)."
  type        = string
  default     = "composer-3-airflow-2"
}

variable "composer_pypi_packages" {
  description = "Extra PyPI packages for the Composer workers (the training package's dependencies). numpy is pinned to the API's version (requirements.txt): the API refuses a model pickled under another numpy major."
  type        = map(string)
  default = {
    "numpy"        = "==2.4.6"
    "scikit-learn" = "==1.9.1"
    "joblib"       = "==1.6.0"
    "matplotlib"   = "==3.11.2"
  }
}

variable "data_retention_days" {
  description = "Noncurrent (overwritten or deleted) object versions are deleted after this many days."
  type        = number
  default     = 30
}

variable "source_datasets" {
  description = "BigQuery datasets the training pipeline reads as `--data bq://project.dataset` (\"project.dataset\" each, e.g. a Google Ads or Meta Ads transfer dataset); the training identity gets roles/bigquery.dataViewer on each."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for d in var.source_datasets : can(regex("^[a-z][a-z0-9-]*[a-z0-9]\\.[A-Za-z0-9_]+$", d))])
    error_message = "Each source dataset must be \"project.dataset\"."
  }
}
