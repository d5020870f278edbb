# The email channel, the log-based metrics the absence alert counts, and the alert policies. The policies are
# read from monitoring/policies/*.json (the same files `gcloud monitoring policies create --policy-from-file`
# takes), so the two ways of creating them cannot drift; the dynamic blocks map the API's JSON fields onto the
# provider's arguments.

locals {
  policy_dir = "${path.module}/../monitoring/policies"
  alert_policies = {
    for f in fileset(local.policy_dir, "*.json") : trimsuffix(f, ".json") => jsondecode(file("${local.policy_dir}/${f}"))
  }
  # Log-based metric -> log filter; counted by the "no promoted model / no successful run in 48 h" policy
  # (training-stale.json). A run that finished as failed or data_invalid is not a success; an unchanged one is.
  log_metrics = {
    adroi_model_promoted     = "jsonPayload.event=\"model_promoted\""
    adroi_training_succeeded = "jsonPayload.event=\"training_finished\" AND jsonPayload.status=(\"promoted\" OR \"rejected\" OR \"unchanged\")"
  }
}

resource "google_monitoring_notification_channel" "email" {
  display_name = "adroi on-call (email)"
  type         = "email"
  labels = {
    email_address = var.notification_email
  }
  depends_on = [google_project_service.required]
}

resource "google_logging_metric" "events" {
  for_each    = local.log_metrics
  name        = each.key
  description = "Count of log entries matching: ${each.value}"
  filter      = each.value
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }
}

resource "google_monitoring_alert_policy" "adroi" {
  for_each              = local.alert_policies
  display_name          = each.value.displayName
  combiner              = each.value.combiner
  severity              = lookup(each.value, "severity", null)
  enabled               = true
  notification_channels = [google_monitoring_notification_channel.email.id]

  documentation {
    content   = each.value.documentation.content
    mime_type = each.value.documentation.mimeType
    subject   = lookup(each.value.documentation, "subject", null)
  }

  dynamic "alert_strategy" {
    for_each = contains(keys(each.value), "alertStrategy") ? [each.value.alertStrategy] : []
    content {
      auto_close = lookup(alert_strategy.value, "autoClose", null)
      dynamic "notification_rate_limit" {
        for_each = contains(keys(alert_strategy.value), "notificationRateLimit") ? [alert_strategy.value.notificationRateLimit] : []
        content {
          period = notification_rate_limit.value.period
        }
      }
    }
  }

  dynamic "conditions" {
    for_each = each.value.conditions
    content {
      display_name = conditions.value.displayName

      dynamic "condition_matched_log" {
        for_each = contains(keys(conditions.value), "conditionMatchedLog") ? [conditions.value.conditionMatchedLog] : []
        content {
          filter           = condition_matched_log.value.filter
          label_extractors = lookup(condition_matched_log.value, "labelExtractors", null)
        }
      }

      dynamic "condition_threshold" {
        for_each = contains(keys(conditions.value), "conditionThreshold") ? [conditions.value.conditionThreshold] : []
        content {
          filter             = condition_threshold.value.filter
          denominator_filter = lookup(condition_threshold.value, "denominatorFilter", null)
          comparison         = condition_threshold.value.comparison
          threshold_value    = condition_threshold.value.thresholdValue
          duration           = condition_threshold.value.duration

          dynamic "aggregations" {
            for_each = lookup(condition_threshold.value, "aggregations", [])
            content {
              alignment_period     = aggregations.value.alignmentPeriod
              per_series_aligner   = aggregations.value.perSeriesAligner
              cross_series_reducer = lookup(aggregations.value, "crossSeriesReducer", null)
              group_by_fields      = lookup(aggregations.value, "groupByFields", null)
            }
          }

          dynamic "denominator_aggregations" {
            for_each = lookup(condition_threshold.value, "denominatorAggregations", [])
            content {
              alignment_period     = denominator_aggregations.value.alignmentPeriod
              per_series_aligner   = denominator_aggregations.value.perSeriesAligner
              cross_series_reducer = lookup(denominator_aggregations.value, "crossSeriesReducer", null)
              group_by_fields      = lookup(denominator_aggregations.value, "groupByFields", null)
            }
          }

          dynamic "trigger" {
            for_each = contains(keys(condition_threshold.value), "trigger") ? [condition_threshold.value.trigger] : []
            content {
              count = trigger.value.count
            }
          }
        }
      }

      dynamic "condition_absent" {
        for_each = contains(keys(conditions.value), "conditionAbsent") ? [conditions.value.conditionAbsent] : []
        content {
          filter   = condition_absent.value.filter
          duration = condition_absent.value.duration

          dynamic "aggregations" {
            for_each = lookup(condition_absent.value, "aggregations", [])
            content {
              alignment_period     = aggregations.value.alignmentPeriod
              per_series_aligner   = aggregations.value.perSeriesAligner
              cross_series_reducer = lookup(aggregations.value, "crossSeriesReducer", null)
              group_by_fields      = lookup(aggregations.value, "groupByFields", null)
            }
          }

          dynamic "trigger" {
            for_each = contains(keys(condition_absent.value), "trigger") ? [condition_absent.value.trigger] : []
            content {
              count = trigger.value.count
            }
          }
        }
      }
    }
  }

  # The absence policy needs its log-based metrics to exist first.
  depends_on = [google_logging_metric.events]
}
