"""segsync's sync, by job: config/, run/ (pull -> gate -> score -> plan -> push), propagation, store/, serve, cli/,
demo."""
