"""What every model family shares: the registry of served models, export, trainer, data mirror."""
