"""The question -> answer path: packing the prompt, answer modes, the quote constraint, the support check."""
