"""One report module per command: the terminal text, the JSON and the self-contained HTML page
of its result (pure: a result in, text/dict/Page out)."""
