"""One tenant's run, in data-flow order: pipeline (pull -> gate -> score -> plan -> push), the consent gate,
the scorer, the plan, the push."""
