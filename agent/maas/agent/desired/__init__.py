"""Desired state: the stored inputs (spec sources, or a repository's assignment to this node),
edited and read back."""
