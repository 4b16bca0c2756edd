"""Authentication: password hashing, JWT callbacks and the permission rules."""
