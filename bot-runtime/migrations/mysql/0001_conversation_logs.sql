-- Times are milliseconds since the Unix epoch (UTC), the same on every engine.
-- MEDIUMTEXT: TEXT holds only 64 KiB and a request body may hold 1 MiB.
CREATE TABLE sessions (
    session_id VARCHAR(64) CHARACTER SET ascii PRIMARY KEY,
    user_id VARCHAR(256),
    -- The API key name that created the session (owner check on reads).
    owner VARCHAR(256),
    channel VARCHAR(32) NOT NULL,
    created_at BIGINT NOT NULL,
    last_active BIGINT NOT NULL,
    INDEX sessions_last_active (last_active)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE conversation_logs (
    id CHAR(32) CHARACTER SET ascii PRIMARY KEY,
    session_id VARCHAR(64) CHARACTER SET ascii NOT NULL,
    user_id VARCHAR(256),
    channel VARCHAR(32) NOT NULL,
    user_input MEDIUMTEXT NOT NULL,
    bot_response MEDIUMTEXT NOT NULL,
    model VARCHAR(256) NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    INDEX conversation_logs_session (session_id, created_at),
    INDEX conversation_logs_time (created_at, id),
    INDEX conversation_logs_user_time (user_id, created_at, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
