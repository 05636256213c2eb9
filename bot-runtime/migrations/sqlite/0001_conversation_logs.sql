-- Times are milliseconds since the Unix epoch (UTC), the same on every engine.
CREATE TABLE sessions (
    session_id VARCHAR(64) PRIMARY KEY,
    user_id VARCHAR(256),
    -- The API key name that created the session (owner check on reads).
    owner VARCHAR(256),
    channel VARCHAR(32) NOT NULL,
    created_at BIGINT NOT NULL,
    last_active BIGINT NOT NULL
);
CREATE INDEX sessions_last_active ON sessions (last_active);

CREATE TABLE conversation_logs (
    id CHAR(32) PRIMARY KEY,
    session_id VARCHAR(64) NOT NULL,
    user_id VARCHAR(256),
    channel VARCHAR(32) NOT NULL,
    user_input TEXT NOT NULL,
    bot_response TEXT NOT NULL,
    model VARCHAR(256) NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
-- "messages of a session", oldest first
CREATE INDEX conversation_logs_session ON conversation_logs (session_id, created_at);
-- time range and keyset pagination on (created_at, id), with and without a user
CREATE INDEX conversation_logs_time ON conversation_logs (created_at, id);
CREATE INDEX conversation_logs_user_time ON conversation_logs (user_id, created_at, id);
