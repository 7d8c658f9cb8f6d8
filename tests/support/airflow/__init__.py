"""A real Airflow 3 deployment for the end-to-end and distributed suites, and what they check."""
