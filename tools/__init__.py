"""Development tools that are not part of the shipped product (nothing in ``inspector/`` imports them)."""
