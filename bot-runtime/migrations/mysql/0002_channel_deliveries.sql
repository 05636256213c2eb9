-- IM deliveries, recorded before the platform gets its ack (when Redis is
-- not configured) and answered once by whichever replica claims them.
-- One row per dedupe key: the delivery's own row ('pending' until answered,
-- then 'done') and, for platforms with a second id, an 'alias' row.
-- Times are milliseconds since the Unix epoch.
CREATE TABLE channel_deliveries (
    dedupe_key VARCHAR(255) PRIMARY KEY,
    state VARCHAR(16) NOT NULL,
    payload MEDIUMTEXT,
    attempts BIGINT NOT NULL,
    claimed_by VARCHAR(128),
    -- A claim not renewed by then is taken over by another replica.
    claim_until BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    -- 'done' and 'alias' rows are deleted after this (the dedupe TTL).
    expires_at BIGINT NOT NULL
);
CREATE INDEX channel_deliveries_due ON channel_deliveries (state, claim_until);
CREATE INDEX channel_deliveries_expiry ON channel_deliveries (expires_at);
