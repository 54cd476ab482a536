"""The dropbox core: configuration, models, store, audit log, services and the CLI."""
