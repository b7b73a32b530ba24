"""Storage: schema migrations (:mod:`.migrate`), queries (:mod:`.readings`), enrolment, retention, history helpers."""
