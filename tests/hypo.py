"""Hypothesis settings for a noisy machine: no per-example deadline, and slow input generation is not a failure."""

from hypothesis import HealthCheck, settings

relaxed = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
