"""Training the re-ranker: the pipeline ``ctxmem-plugin train`` runs and the parts it is made of."""
