"""Infrastructure: the outside systems the platform talks to, below every layer that uses
them (the Postgres warehouse and its write lock, the alert webhook, the production
topology run natively). Nothing here imports Dagster definitions or the application."""
