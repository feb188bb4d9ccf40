"""One adapter per ESP export format; each maps a provider's records to staged canonical rows."""
