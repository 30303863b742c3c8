"""Access tokens: signing keys, issuing (users service), verifying (everyone), identity."""
