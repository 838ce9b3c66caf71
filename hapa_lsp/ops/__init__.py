"""Operations: the sidecar (metrics, health, dashboard), telemetry, the incident log and rate limits."""
