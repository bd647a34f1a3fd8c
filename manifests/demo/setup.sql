-- Demo data for `make run`: old rows for cleanup and archival, events for a roll-up, a view to refresh.
CREATE TABLE IF NOT EXISTS sessions (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS audit_log (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL, entry text);
CREATE TABLE IF NOT EXISTS usage_events (id bigserial PRIMARY KEY, at timestamptz NOT NULL, tokens int NOT NULL);
CREATE TABLE IF NOT EXISTS usage_daily_totals (day date PRIMARY KEY, tokens bigint NOT NULL);
INSERT INTO sessions (created_at) SELECT now() - (i || ' minutes')::interval FROM generate_series(1, 5000) i;
INSERT INTO audit_log (created_at, entry) SELECT now() - (i || ' hours')::interval, 'entry ' || i FROM generate_series(1, 2000) i;
INSERT INTO usage_events (at, tokens) SELECT now() - (i || ' minutes')::interval, i % 97 FROM generate_series(1, 3000) i;
CREATE MATERIALIZED VIEW IF NOT EXISTS usage_by_hour AS
  SELECT date_trunc('hour', at) AS hour, sum(tokens) AS tokens FROM usage_events GROUP BY 1;
CREATE UNIQUE INDEX IF NOT EXISTS usage_by_hour_hour ON usage_by_hour (hour);
