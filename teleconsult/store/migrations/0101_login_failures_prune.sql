-- Login failures older than every lockout window are pruned on each failed login (teleconsult.security.accounts).
-- tbib:common
create index login_failures_at on login_failures (at);
