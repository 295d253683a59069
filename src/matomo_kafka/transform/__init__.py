"""A Matomo visit becomes a message: dimensions renamed, goals, columns pseudonymised."""
