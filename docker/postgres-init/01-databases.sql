-- Runs once, when the postgres service starts on an empty data volume
-- (/docker-entrypoint-initdb.d), as POSTGRES_USER connected to the default database.
-- One database per concern, all owned by POSTGRES_USER:
--   warehouse  raw/staging/marts/scoring/analytics schemas (CHURN_WAREHOUSE_URL, dbt)
--   dagster    runs, event logs, schedule and sensor state (docker/dagster.yaml)
--   mlflow     tracking and model registry (the mlflow service's backend store)
-- Idempotent (\gexec only creates what is missing), so it can also be replayed by hand:
--   docker compose exec postgres psql -U "$POSTGRES_USER" -d postgres -f /docker-entrypoint-initdb.d/01-databases.sql
-- No password lives here: roles and passwords come from the service's environment.

SELECT format('CREATE DATABASE %I', db)
FROM unnest(ARRAY['warehouse', 'dagster', 'mlflow']) AS db
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = db)
\gexec
