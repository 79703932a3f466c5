"""Model families: each folder holds one family's networks, pipeline and loaders."""
