"""segsync's sync: config, store, pipeline (pull -> gate -> score -> plan -> push), scheduler, server, CLI."""
