"""Exit statuses of maasctl (the only place that picks them)."""

OK = 0
FAILED = 1
USAGE = 2
CHANGES = 2  # plan --detailed-exitcode
UNAVAILABLE = 69  # EX_UNAVAILABLE: no agent answers
INTERNAL = 70  # EX_SOFTWARE
