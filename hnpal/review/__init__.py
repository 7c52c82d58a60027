"""Human review of what the model wrote (held summaries and answers, decisions, the sends that follow)
and the silence protocol (users under review, silenced users, their quarantined messages)."""
