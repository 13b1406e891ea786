"""The local stack: a process supervisor and the composition that `perpline up` runs."""
