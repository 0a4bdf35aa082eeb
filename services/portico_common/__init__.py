"""Code shared by the three sample services (settings base, pagination, errors, identity)."""
