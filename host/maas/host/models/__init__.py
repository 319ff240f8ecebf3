"""Models on this host: metadata read from headers (`metadata`), the hubs as one interface (`hub`),
downloads of pinned revisions (`download`) and the cache folder's owner (`cache`)."""
