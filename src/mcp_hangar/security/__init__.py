"""Protecting hangar: authentication, authorization, rate limits, input validation."""
