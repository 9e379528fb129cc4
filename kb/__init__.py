"""Learning Notes tooling: the kb command, the MkDocs plugin and the pytest plugin."""
