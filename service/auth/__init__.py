"""Who is calling: personal access tokens, browser sessions, CSRF and guards."""
