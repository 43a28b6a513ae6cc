"""Tools that look at an index: `rag explain`, `rag map` and `rag eval`, with their renderers and data readers."""
