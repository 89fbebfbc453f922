"""De-identification, pseudonymisation and (later) memorisation checks."""
