"""Model families: each subpackage builds one kind of network from its checkpoint."""
