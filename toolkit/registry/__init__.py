"""The strategy-version registry: MLflow runs, registered versions, aliases and the audit trail."""
