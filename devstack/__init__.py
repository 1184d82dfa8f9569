"""The local stack behind `make run` and `make test`: real servers as private processes."""
