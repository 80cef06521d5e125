-- One-time console login codes already exchanged for a session cookie. A code is a signed,
-- short-lived token; its id lands here on first use, so a second use is refused even after an
-- orchestrator restart.
CREATE TABLE console_logins (
    jti        uuid PRIMARY KEY,
    subject    text NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz NOT NULL DEFAULT now()
);
